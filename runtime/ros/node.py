"""The ROS 2 node: image topics in, ``vision_msgs/Detection2DArray`` out (needs rclpy).

One subscription per input topic with sensor-data QoS (best effort, keep last, depth 1);
its callback only views the message's pixels (or takes the CompressedImage's bytes) and
offers them to that camera's ``CameraLink`` (runtime/ros/link.py), which never blocks on
the network. Answers are published from the link's receiver thread, one Detection2DArray
per answered frame with the input header copied; a dropped frame publishes nothing.

Messages stay serialized on both sides (runtime/ros/cdr.py): the subscriptions are raw
(the callback reads the header and the image bytes from the CDR buffer; a message in an
encapsulation cdr.py does not read is deserialized by rclpy instead) and the
Detection2DArray is published as the bytes cdr.py writes, with no Python message objects.

rclpy and vision_msgs are imported when the bridge starts (not at module import), so the
runtime installs and imports without the ``ros`` extra.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from runtime.client import DetectorClient
from runtime.errors import InputError, MissingPackage, UnderstudyError
from runtime.ros import cdr
from runtime.ros.convert import MessageTypes, compressed_payload, image_array, stamp_ns
from runtime.ros.link import CameraLink, TraceFile
from runtime.ros.options import BridgeOptions

log = logging.getLogger("understudy.ros")
NODE_NAME = "understudy_ros"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
TYPE_POLL_S = 0.5
SPIN_SLICE_S = 0.1  # how often the executor loop looks at the stop flag
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def message_types() -> MessageTypes:
    """The generated vision_msgs classes; MissingPackage says how to build them."""
    try:
        from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
    except ImportError as e:
        raise MissingPackage(
            "vision_msgs is not installed in this Python: build it with "
            "`bash scripts/side_env/ros.sh` (docs/ros.md), or source a ROS 2 workspace that "
            "has it"
        ) from e
    return MessageTypes(Detection2DArray, Detection2D, ObjectHypothesisWithPose)


def sensor_qos() -> Any:
    """Camera QoS: best effort, keep last, depth 1 (a late frame is replaced, not queued)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        reliability=ReliabilityPolicy.BEST_EFFORT,
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        durability=DurabilityPolicy.VOLATILE,
    )


def declared_options(node: Any, options: BridgeOptions) -> BridgeOptions:
    """Declare every bridge parameter with the flag's value as default; return the options
    with the values the node got (``--ros-args -p``, launch files and YAML win)."""
    from rclpy.parameter import Parameter

    values = {}
    for name, default in options.parameters().items():
        if isinstance(default, list) and not default:  # an empty list has no type of its own
            param = node.declare_parameter(name, Parameter.Type.STRING_ARRAY)
            value = param.value
            values[name] = default if value is None else list(value)
        else:
            values[name] = node.declare_parameter(name, default).value
    return options.with_parameters(values)


class Bridge:
    """The bridge's state on one rclpy node: links, publishers, subscriptions, timers."""

    def __init__(self, node: Any, options: BridgeOptions) -> None:
        self.node = node
        self.options = options = declared_options(node, options)
        self.types = message_types()
        self.client = DetectorClient(
            options.server, token=options.token or None, tls_ca=options.tls_ca or None
        )
        if options.wait_ready_s > 0 and not self.client.wait_ready(options.wait_ready_s):
            self.client.close()
            raise UnderstudyError(
                f"the server at {options.server} is not ready after {options.wait_ready_s:g} "
                "s: start `understudy serve` there, or raise --wait-ready"
            )
        self.trace = TraceFile(options.trace) if options.trace else None
        self.links: dict[str, CameraLink] = {}
        self._waiting: dict[str, str] = {}  # input topic -> output topic, type not known yet
        self._subscriptions: list[Any] = []
        for topic, out in zip(options.input_topics, options.outputs()):
            self._add_camera(node.resolve_topic_name(topic), out)
        self._type_timer = node.create_timer(TYPE_POLL_S, self._resolve_waiting)
        if options.stats_period_s > 0:
            node.create_timer(options.stats_period_s, self.log_counts)

    def _add_camera(self, topic: str, output: str) -> None:
        publisher = self.node.create_publisher(self.types.Detection2DArray, output, 10)

        def publish(header: cdr.RawHeader, boxes: list, _response: Any) -> None:
            publisher.publish(cdr.detection_array_cdr(header, boxes))

        link = CameraLink(
            self.client,
            topic,
            publish,
            budget_ms=self.options.budget_ms,
            encode=self.options.encode,
            jpeg_quality=self.options.jpeg_quality,
            trace=self.trace,
        )
        link.start()
        self.links[topic] = link
        self._waiting[topic] = output
        log.info("%s -> %s (server %s)", topic, publisher.topic_name, self.options.server)
        self._resolve_waiting()

    def _topic_kind(self, topic: str) -> str | None:
        """ "image" or "compressed" for ``topic``, None while its type is unknown."""
        if self.options.input_type != "auto":
            return self.options.input_type
        if topic.rstrip("/").endswith("compressed"):
            return "compressed"
        types = dict(self.node.get_topic_names_and_types()).get(topic, [])
        if COMPRESSED_TYPE in types:
            return "compressed"
        if IMAGE_TYPE in types:
            return "image"
        if types:
            raise InputError(f"{topic} has type {types}, not {IMAGE_TYPE} or {COMPRESSED_TYPE}")
        return None

    def _resolve_waiting(self) -> None:
        for topic in list(self._waiting):
            try:
                kind = self._topic_kind(topic)
            except InputError as e:
                del self._waiting[topic]
                log.error("%s: not subscribed: %s", topic, e)
                continue
            if kind is None:
                continue
            del self._waiting[topic]
            self._subscribe(topic, kind)
        if not self._waiting and getattr(self, "_type_timer", None) is not None:
            self._type_timer.cancel()

    def _subscribe(self, topic: str, kind: str) -> None:
        from sensor_msgs.msg import CompressedImage, Image

        link = self.links[topic]
        msg_type = CompressedImage if kind == "compressed" else Image
        read = read_compressed if kind == "compressed" else read_image

        def callback(raw: bytes) -> None:
            now = time.time_ns()
            try:
                header, payload = read(raw, msg_type)
            except InputError as e:
                link.count_error()
                log.warning("%s: %s", link.camera_id, e)
                return
            link.offer(payload, header, stamp_ns(header, now))

        sub = self.node.create_subscription(msg_type, topic, callback, sensor_qos(), raw=True)
        self._subscriptions.append(sub)
        log.info("%s: subscribed as %s", topic, msg_type.__name__)

    def log_counts(self) -> None:
        for topic, link in self.links.items():
            log.info("%s", link.counts().line(topic))

    def close(self) -> None:
        for link in self.links.values():
            link.close()
        self.log_counts()
        if self.trace is not None:
            self.trace.close()
        self.client.close()


def read_compressed(raw: bytes, msg_type: Any) -> tuple[cdr.RawHeader, bytes]:
    """A serialized CompressedImage -> (header, JPEG/PNG bytes). Raises InputError."""
    try:
        header, fmt, data = cdr.read_compressed(raw)
    except cdr.UnknownEncoding:
        msg = _deserialize(raw, msg_type)
        header, fmt, data = cdr.header_of(msg.header), msg.format, msg.data
    return header, compressed_payload(fmt, data)


def read_image(raw: bytes, msg_type: Any) -> tuple[cdr.RawHeader, Any]:
    """A serialized Image -> (header, (H, W, 3) BGR / (H, W) view). Raises InputError."""
    try:
        m = cdr.read_image(raw)
    except cdr.UnknownEncoding:
        msg = _deserialize(raw, msg_type)
        m = cdr.RawImage(
            cdr.header_of(msg.header), msg.height, msg.width, msg.encoding, msg.step, msg.data
        )
    return m.header, image_array(m.encoding, m.height, m.width, m.step, m.data)


def _deserialize(raw: bytes, msg_type: Any) -> Any:
    from rclpy.serialization import deserialize_message

    try:
        return deserialize_message(raw, msg_type)
    except Exception as e:  # rclpy raises its own untyped errors for bad data
        raise InputError(f"{msg_type.__name__}: cannot be deserialized ({e})") from e


def make_executor(kind: str) -> Any:
    """rclpy's EventsExecutor for "events" (where this rclpy has it), else its
    SingleThreadedExecutor. The events executor waits and dispatches in C++: measured in
    benchmarks/results/ros.md, it takes less time from a message's arrival to its callback."""
    from rclpy.executors import SingleThreadedExecutor

    if kind == "events":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:
            log.info("this rclpy has no EventsExecutor: using the SingleThreadedExecutor")
        else:
            log.info("executor: EventsExecutor")
            return EventsExecutor()
    log.info("executor: SingleThreadedExecutor")
    return SingleThreadedExecutor()


def run_bridge(options: BridgeOptions, ros_args: list[str] | None = None) -> int:
    """Run the bridge node until Ctrl-C / SIGTERM / ROS shutdown; returns the exit code.

    The signals are handled here, not by rclpy: the executor spins in 0.1 s slices and
    stops when SIGINT or SIGTERM sets ``stop`` (rclpy's own SIGTERM handling was seen to
    miss a signal now and then, leaving the node running)."""
    try:
        import rclpy
        from rclpy.executors import ExternalShutdownException
        from rclpy.signals import SignalHandlerOptions
    except ImportError as e:
        raise MissingPackage(
            "needs rclpy, not installed here; pip install 'understudy[ros]' with Python "
            "3.11, or `bash scripts/side_env/ros.sh` (docs/ros.md)"
        ) from e
    args = ["understudy-ros", "--ros-args", *(ros_args or [])]
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in STOP_SIGNALS}
    node = rclpy.create_node(NODE_NAME)
    bridge = None
    try:
        bridge = Bridge(node, options)
        executor = make_executor(bridge.options.executor)
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=SPIN_SLICE_S)
    except ExternalShutdownException:
        pass
    finally:
        if bridge is not None:
            bridge.close()
        node.destroy_node()
        rclpy.try_shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
