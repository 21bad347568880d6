"""The ROS 2 bridge: camera topics in, ``vision_msgs/Detection2DArray`` out, through a
running ``understudy serve`` (``understudy ros`` or ``python -m runtime.ros``; docs/ros.md).

- ``convert``: message <-> frame/answer conversions (pure, no rclpy);
- ``options``: flags and ROS parameters;
- ``link``: one camera's StreamDetect call, never blocking the ROS executor;
- ``node``: the rclpy node (rclpy and vision_msgs imported only when it starts).

Needs the ``ros`` extra (rclpy) and vision_msgs, which ``scripts/side_env/ros.sh`` builds.
"""
