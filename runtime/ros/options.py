"""The bridge's settings: command-line flags and ROS parameters (same names, ``-`` for ``_``).

Flags set the parameters' defaults; a parameter given to the node (``--ros-args -p
name:=value``, a launch file, a params YAML) wins over the flag. The bearer token is a
flag / ``$UNDERSTUDY_TOKEN`` only, never a parameter (parameters can be listed by any node
on the graph).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields, replace
from typing import Any

from runtime.errors import ConfigError

INPUT_TYPES = ("auto", "image", "compressed")
ENCODINGS = ("jpeg", "png", "raw")
EXECUTORS = ("events", "single")


@dataclass(frozen=True)
class BridgeOptions:
    """Everything the bridge node needs (see ``add_arguments`` for each one's meaning)."""

    input_topics: tuple[str, ...] = ("image",)
    output_topics: tuple[str, ...] = ()  # () -> derived, see ``outputs``
    input_type: str = "auto"
    server: str = "127.0.0.1:50051"
    budget_ms: float = 0.0
    encode: str = "jpeg"
    jpeg_quality: int = 90
    tls_ca: str = ""
    wait_ready_s: float = 60.0
    stats_period_s: float = 10.0
    trace: str = ""
    executor: str = "events"
    token: str = ""

    def outputs(self) -> tuple[str, ...]:
        """Output topic per input: as given, else "detections" for one input and
        "<input>/detections" for several."""
        if self.output_topics:
            return self.output_topics
        if len(self.input_topics) == 1:
            return ("detections",)
        return tuple(f"{t.rstrip('/')}/detections" for t in self.input_topics)

    def check(self) -> BridgeOptions:
        """Raises ConfigError naming the setting at fault; returns self."""
        if not self.input_topics or any(not t for t in self.input_topics):
            raise ConfigError("input_topics: give at least one image topic (--input TOPIC)")
        if self.output_topics and len(self.output_topics) != len(self.input_topics):
            raise ConfigError(
                f"output_topics: {len(self.output_topics)} given for "
                f"{len(self.input_topics)} input topics; give one per input (or none)"
            )
        if self.input_type not in INPUT_TYPES:
            raise ConfigError(f"input_type must be one of {INPUT_TYPES}, got {self.input_type!r}")
        if self.encode not in ENCODINGS:
            raise ConfigError(f"encode must be one of {ENCODINGS}, got {self.encode!r}")
        if self.budget_ms < 0:
            raise ConfigError(f"budget_ms must be >= 0 (0 = the server's), got {self.budget_ms}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {EXECUTORS}, got {self.executor!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        return self

    def parameters(self) -> dict[str, Any]:
        """ROS parameter name -> default value (every field but the token)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "token"}
        out["input_topics"] = list(self.input_topics)
        out["output_topics"] = list(self.output_topics)
        return out

    def with_parameters(self, values: dict[str, Any]) -> BridgeOptions:
        """A copy with the ROS parameters' values (lists become tuples), checked."""
        known = {f.name for f in fields(self)} - {"token"}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown bridge parameters: {sorted(unknown)}")
        cast = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in values.items()}
        return replace(self, **cast).check()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The bridge's flags (shared by ``understudy ros`` and ``python -m runtime.ros``)."""
    d = BridgeOptions()
    p.add_argument(
        "--input",
        action="append",
        default=None,
        metavar="TOPIC",
        help="image topic to subscribe to (repeat for several cameras; default: image)",
    )
    p.add_argument(
        "--output",
        action="append",
        default=None,
        metavar="TOPIC",
        help="Detection2DArray topic, one per --input (default: detections for one input, "
        "INPUT/detections for several)",
    )
    p.add_argument(
        "--input-type",
        choices=INPUT_TYPES,
        default=d.input_type,
        help="auto: the topic's type on the graph (a name ending in 'compressed' is a "
        "CompressedImage); image: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage",
    )
    p.add_argument("--server", default=d.server, help="HOST:PORT of `understudy serve`")
    p.add_argument(
        "--budget-ms", type=float, default=d.budget_ms, help="per-frame budget (0 = server's)"
    )
    p.add_argument(
        "--encode",
        choices=ENCODINGS,
        default=d.encode,
        help="how raw Image frames are sent: jpeg, png or raw pixels (CompressedImage bytes "
        "always pass through untouched)",
    )
    p.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality)
    p.add_argument("--token", default=None, help="bearer token (default: $UNDERSTUDY_TOKEN)")
    p.add_argument("--tls-ca", default=d.tls_ca, help="PEM CA/certificate to trust (enables TLS)")
    p.add_argument(
        "--wait-ready",
        type=float,
        default=d.wait_ready_s,
        metavar="SECONDS",
        help="wait this long for the server to be ready before subscribing (0: do not wait)",
    )
    p.add_argument(
        "--stats-period",
        type=float,
        default=d.stats_period_s,
        metavar="SECONDS",
        help="log received / published / dropped counts this often (0: only at exit)",
    )
    p.add_argument(
        "--trace",
        default=d.trace,
        metavar="FILE",
        help="append one JSON line per answered frame (topic, stamp, server time, publish "
        "time) to FILE, for latency measurements",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=d.executor,
        help="events: rclpy's EventsExecutor (C++, the lower latency; where this rclpy has "
        "none, e.g. Humble, the single-threaded one is used); single: rclpy's "
        "SingleThreadedExecutor",
    )
    p.add_argument(
        "--ros-args",
        nargs=argparse.REMAINDER,
        default=None,
        help="the rest goes to ROS (e.g. --ros-args -p server:=10.0.0.2:50051 -r __ns:=/cam)",
    )


def from_args(args: argparse.Namespace) -> BridgeOptions:
    """BridgeOptions from parsed flags (the token from --token, else $UNDERSTUDY_TOKEN)."""
    token = args.token if args.token is not None else os.environ.get("UNDERSTUDY_TOKEN", "")
    return BridgeOptions(
        input_topics=tuple(args.input or BridgeOptions.input_topics),
        output_topics=tuple(args.output or ()),
        input_type=args.input_type,
        server=args.server,
        budget_ms=args.budget_ms,
        encode=args.encode,
        jpeg_quality=args.jpeg_quality,
        tls_ca=args.tls_ca,
        wait_ready_s=args.wait_ready,
        stats_period_s=args.stats_period,
        trace=args.trace,
        executor=args.executor,
        token=token,
    ).check()
