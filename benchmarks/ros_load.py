"""The ROS side of the bridge benchmark (used by ``benchmarks.ros`` only): N camera topics
published open loop in this process, and the Detection2DArray arrivals on their outputs.
Needs rclpy, sensor_msgs and vision_msgs (the ROS side env).

Arrival is when the subscription callback gets the serialized message (a raw subscription
spun by the EventsExecutor; the stamp is read from its bytes): the time a subscriber would
then spend turning it into Python objects is its own, not the bridge's. Also the direct
StreamDetect clients (no ROS) that give the gRPC floor."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Arrivals:
    """What the subscriber saw: per stream, stamp (ns) -> arrival (ns, this clock)."""

    by_stream: list[dict[int, int]] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)


def _messages(kind: str, frames: list[bytes], images: list[np.ndarray]) -> list:
    """One message per frame: CompressedImage (JPEG bytes) or Image (bgr8)."""
    from sensor_msgs.msg import CompressedImage, Image

    if kind == "compressed":
        return [CompressedImage(format="jpeg", data=f) for f in frames]
    out = []
    for img in images:
        h, w = img.shape[:2]
        msg = Image(height=h, width=w, encoding="bgr8", step=w * 3)
        msg.data = img.tobytes()
        out.append(msg)
    return out


def _wait_for_graph(node, pubs, outputs: list[str], timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while any(p.get_subscription_count() < 1 for p in pubs) or any(
        node.count_publishers(t) < 1 for t in outputs
    ):
        if time.monotonic() > end:
            raise SystemExit("the bridge did not subscribe / advertise within 60 s")
        time.sleep(0.1)


def _publish_loop(pubs, messages: list, fps: float, duration_s: float, sent: list[int]) -> None:
    """Frame i of stream s leaves at t0 + s / (N fps) + i / fps, stamped with the time it is
    published (its capture time); open loop, whatever the answers do."""
    n = len(pubs)
    t0 = time.perf_counter() + 0.1
    schedule = sorted(
        (t0 + s / (n * fps) + i / fps, s, i) for s in range(n) for i in range(int(duration_s * fps))
    )
    for due, s, i in schedule:
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        msg = messages[i % len(messages)]
        ns = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
        msg.header.frame_id = f"camera{s}"
        pubs[s].publish(msg)
        sent[s] += 1


def drive(
    inputs: list[str],
    outputs: list[str],
    kind: str,
    frames: list[bytes],
    images: list[np.ndarray],
    fps: float,
    duration_s: float,
    settle_s: float = 2.0,
) -> Arrivals:
    """Publish on ``inputs`` at ``fps`` each for ``duration_s``; record arrivals on
    ``outputs`` until ``settle_s`` after the last frame."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image
    from vision_msgs.msg import Detection2DArray

    from runtime.ros.cdr import read_header
    from runtime.ros.node import make_executor

    rclpy.init()
    node = rclpy.create_node("understudy_ros_bench")
    msg_type = CompressedImage if kind == "compressed" else Image
    pubs = [node.create_publisher(msg_type, t, qos_profile_sensor_data) for t in inputs]
    result = Arrivals([{} for _ in inputs], [0] * len(inputs))

    def on_answer(stream: int):
        seen = result.by_stream[stream]

        def callback(raw: bytes) -> None:  # the serialized message, as it arrived
            arrival = time.time_ns()
            header = read_header(raw)
            seen[header.sec * 1_000_000_000 + header.nanosec] = arrival

        return callback

    for s, topic in enumerate(outputs):
        node.create_subscription(Detection2DArray, topic, on_answer(s), 10, raw=True)
    executor = make_executor("events")
    executor.add_node(node)
    stop = threading.Event()

    def spin() -> None:  # in slices: the EventsExecutor's shutdown() hangs while it spins
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        _wait_for_graph(node, pubs, outputs)
        messages = _messages(kind, frames, images)
        _publish_loop(pubs, messages, fps, duration_s, result.sent)
        time.sleep(settle_s)
    finally:
        stop.set()
        spinner.join(5)
        node.destroy_node()
        rclpy.try_shutdown()
    return result


@dataclass
class DirectTimes:
    """What a direct StreamDetect client saw, per answered frame: when it offered the frame
    (ns), when the answer came back (ns) and the server's total time (ms)."""

    offered_ns: list[int] = field(default_factory=list)
    answered_ns: list[int] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    sent: int = 0


def _direct_stream(
    target: str, camera: str, frames: list[bytes], due: list[float], out: DirectTimes
) -> None:
    """One camera streamed straight to the server as the bridge does it (runtime.client's
    StreamCall, a one-frame slot, a receiver thread), without ROS: frame ``i`` is offered at
    ``due[i]`` (perf_counter s), stamped with the time it is offered."""
    from runtime.client import DetectorClient

    client = DetectorClient(target, own_connection=True)
    call = client.open_stream(camera_id=camera, queue_size=1)
    offered: dict[int, int] = {}

    def receive() -> None:
        for response in call:
            now = time.time_ns()
            if response.WhichOneof("kind") == "result":
                r = response.result
                out.offered_ns.append(offered[r.frame_id])
                out.answered_ns.append(now)
                out.server_ms.append(r.timings.total_ms)

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    for i, t in enumerate(due):
        delay = t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        ns = time.time_ns()
        offered[i] = ns
        call.send(frames[i % len(frames)], frame_id=i, capture_time_ns=ns)
        out.sent += 1
    call.close()
    receiver.join(30)
    client.close()


def drive_direct(
    target: str, frames: list[bytes], streams: int, fps: float, duration_s: float
) -> list[DirectTimes]:
    """``streams`` direct clients at ``fps`` each, staggered like ``drive``'s topics."""
    t0 = time.perf_counter() + 0.2
    results = [DirectTimes() for _ in range(streams)]
    threads = []
    for s in range(streams):
        due = [t0 + s / (streams * fps) + i / fps for i in range(int(duration_s * fps))]
        threads.append(
            threading.Thread(
                target=_direct_stream, args=(target, f"direct{s}", frames, due, results[s])
            )
        )
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + 60)
    return results
