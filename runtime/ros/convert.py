"""Conversions between ROS 2 messages and ``understudy.v1`` frames and answers.

Pure functions, importable without rclpy: the message classes they fill are passed in
(``MessageTypes``), so the tests can hand them plain stand-ins.

- Input: a ``sensor_msgs/Image`` (its encoding, size, row step and pixel bytes) becomes a
  (H, W, 3) BGR or (H, W) gray uint8 view of the message's buffer (no copy; the sender
  thread copies or encodes it); a ``sensor_msgs/CompressedImage``'s bytes pass through
  untouched (the server reads JPEG/PNG from the magic bytes).
- Stamp: ``header.stamp`` (sec, nanosec) becomes the frame's capture time in ns since
  the epoch; a zero stamp (a driver that does not set it) becomes the receipt time.
- Output: a ``DetectResponse``'s boxes (x1, y1, x2, y2 in the pixels of the image as
  sent) become ``Box2D`` (center and size in the same pixels), then a
  ``vision_msgs/Detection2DArray`` whose header, and each Detection2D's, is the input's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.errors import InputError

# sensor_msgs/Image encodings the bridge reads: name -> (channels, how to get BGR / gray).
IMAGE_ENCODINGS = {
    "bgr8": 3,
    "rgb8": 3,
    "bgra8": 4,
    "rgba8": 4,
    "mono8": 1,
    "8UC3": 3,  # OpenCV's type names: taken as bgr8 / mono8
    "8UC1": 1,
}


@dataclass(frozen=True)
class Box2D:
    """One detection as ``vision_msgs`` holds it: center and full size in source-image
    pixels (x right, y down), the class name (or id as text) and the score in [0, 1]."""

    center_x: float
    center_y: float
    size_x: float
    size_y: float
    class_id: str
    score: float


@dataclass(frozen=True)
class MessageTypes:
    """The ``vision_msgs`` classes to build (the generated ones, or stand-ins in tests)."""

    Detection2DArray: Any
    Detection2D: Any
    ObjectHypothesisWithPose: Any


def stamp_ns(stamp: Any, now_ns: int) -> int:
    """``builtin_interfaces/Time`` (sec, nanosec) -> ns since the epoch; ``now_ns`` when the
    stamp is zero (unset)."""
    ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return ns if ns > 0 else int(now_ns)


def image_array(encoding: str, height: int, width: int, step: int, data: Any) -> np.ndarray:
    """A ``sensor_msgs/Image``'s pixels as a uint8 view: (H, W, 3) BGR for colour encodings,
    (H, W) for mono8. Rows padded beyond ``width * channels`` (``step``) are cut. Raises
    InputError for an encoding other than ``IMAGE_ENCODINGS`` or data shorter than
    ``step * height``."""
    channels = IMAGE_ENCODINGS.get(encoding)
    if channels is None:
        raise InputError(
            f"Image encoding {encoding!r} is not supported: publish one of "
            f"{', '.join(IMAGE_ENCODINGS)}, or a CompressedImage topic"
        )
    if height <= 0 or width <= 0 or step < width * channels:
        raise InputError(
            f"Image size {width}x{height} with step {step} is inconsistent for {encoding} "
            f"(step must be >= width * {channels})"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size < step * height:
        raise InputError(
            f"Image data has {buf.size} bytes, expected step * height = {step * height}"
        )
    rows = buf[: step * height].reshape(height, step)[:, : width * channels]
    pixels = rows.reshape(height, width, channels)
    match encoding:
        case "mono8" | "8UC1":
            return pixels[:, :, 0]
        case "rgb8":
            return pixels[:, :, ::-1]
        case "rgba8":
            return pixels[:, :, 2::-1]
        case _:  # bgr8, 8UC3, bgra8
            return pixels[:, :, :3]


def compressed_payload(fmt: str, data: Any) -> bytes:
    """A ``sensor_msgs/CompressedImage``'s bytes, untouched. Raises InputError for empty
    data or a format that names neither JPEG nor PNG (e.g. "h264", "rvl")."""
    name = fmt.lower()
    if name and "jpeg" not in name and "jpg" not in name and "png" not in name:
        raise InputError(
            f"CompressedImage format {fmt!r} is not JPEG or PNG: publish JPEG/PNG frames "
            "(image_transport's compressed transport) or a raw Image topic"
        )
    payload = bytes(data)
    if not payload:
        raise InputError("CompressedImage has no data")
    return payload


def boxes_from_response(response: Any) -> list[Box2D]:
    """A ``DetectResponse``'s detections (x1, y1, x2, y2 in image pixels, score, class id,
    label) as ``Box2D``; the class is the label (class name), else the id as text."""
    boxes = []
    for d in response.detections:
        w, h = float(d.x2) - float(d.x1), float(d.y2) - float(d.y1)
        boxes.append(
            Box2D(
                center_x=float(d.x1) + w / 2.0,
                center_y=float(d.y1) + h / 2.0,
                size_x=w,
                size_y=h,
                class_id=d.label or str(d.class_id),
                score=float(d.score),
            )
        )
    return boxes


def xyxy(box: Box2D) -> tuple[float, float, float, float]:
    """A Box2D back to (x1, y1, x2, y2) pixels."""
    return (
        box.center_x - box.size_x / 2.0,
        box.center_y - box.size_y / 2.0,
        box.center_x + box.size_x / 2.0,
        box.center_y + box.size_y / 2.0,
    )


def detection_array(header: Any, boxes: list[Box2D], types: MessageTypes) -> Any:
    """A ``vision_msgs/Detection2DArray`` for ``boxes``: the array's header and each
    detection's are ``header`` (the input image's: stamp and frame_id), one hypothesis per
    detection (class_id = class name, score), bbox center/size in pixels, theta 0."""
    array = types.Detection2DArray()
    array.header = header
    detections = []
    for box in boxes:
        det = types.Detection2D()
        det.header = header
        det.bbox.center.position.x = box.center_x
        det.bbox.center.position.y = box.center_y
        det.bbox.size_x = box.size_x
        det.bbox.size_y = box.size_y
        hypothesis = types.ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = box.class_id
        hypothesis.hypothesis.score = box.score
        det.results = [hypothesis]
        detections.append(det)
    array.detections = detections
    return array
