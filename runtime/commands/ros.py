"""``understudy ros``: the ROS 2 bridge (camera topics in, Detection2DArray out).

Subscribes to image topics (sensor_msgs/Image or CompressedImage) with sensor-data QoS,
streams the frames to a running ``understudy serve`` and publishes
vision_msgs/Detection2DArray with the input header copied. Needs the ``ros`` extra and
vision_msgs (``bash scripts/side_env/ros.sh``); see docs/ros.md.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from runtime.ros.options import add_arguments

    p = subparsers.add_parser(
        "ros",
        help="ROS 2 bridge: image topics in, vision_msgs/Detection2DArray out",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from runtime.ros.node import run_bridge
    from runtime.ros.options import from_args

    return run_bridge(from_args(args), args.ros_args or [])
