"""The bridge's message conversions, with plain stand-ins for the ROS message classes."""

from __future__ import annotations

import array
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.proto import pb
from runtime.ros.convert import (
    MessageTypes,
    boxes_from_response,
    compressed_payload,
    detection_array,
    image_array,
    stamp_ns,
    xyxy,
)


@dataclass
class Point2D:
    x: float = 0.0
    y: float = 0.0


@dataclass
class Pose2D:
    position: Point2D = field(default_factory=Point2D)
    theta: float = 0.0


@dataclass
class BoundingBox2D:
    center: Pose2D = field(default_factory=Pose2D)
    size_x: float = 0.0
    size_y: float = 0.0


@dataclass
class ObjectHypothesis:
    class_id: str = ""
    score: float = 0.0


@dataclass
class ObjectHypothesisWithPose:
    hypothesis: ObjectHypothesis = field(default_factory=ObjectHypothesis)


@dataclass
class Detection2D:
    header: object = None
    results: list = field(default_factory=list)
    bbox: BoundingBox2D = field(default_factory=BoundingBox2D)
    id: str = ""


@dataclass
class Detection2DArray:
    header: object = None
    detections: list = field(default_factory=list)


TYPES = MessageTypes(Detection2DArray, Detection2D, ObjectHypothesisWithPose)


def response(*dets: tuple) -> pb.DetectResponse:
    r = pb.DetectResponse(frame_id=3)
    for x1, y1, x2, y2, score, cid, label in dets:
        r.detections.add(x1=x1, y1=y1, x2=x2, y2=y2, score=score, class_id=cid, label=label)
    return r


def test_boxes_are_center_and_size_in_pixels_with_the_class_name() -> None:
    dets = (10, 20, 50, 80, 0.75, 1, "car"), (0, 0, 4, 2, 0.5, 2, "")
    boxes = boxes_from_response(response(*dets))
    assert boxes[0].center_x == 30 and boxes[0].center_y == 50
    assert boxes[0].size_x == 40 and boxes[0].size_y == 60
    assert boxes[0].class_id == "car" and boxes[0].score == 0.75
    assert boxes[1].class_id == "2"  # no label: the class id as text
    assert xyxy(boxes[0]) == (10, 20, 50, 80)


def test_detection_array_copies_the_header_everywhere() -> None:
    header = SimpleNamespace(stamp=SimpleNamespace(sec=5, nanosec=7), frame_id="cam0")
    dets = (10, 20, 50, 80, 0.75, 1, "car"), (1, 2, 3, 4, 0.3, 0, "person")
    boxes = boxes_from_response(response(*dets))
    msg = detection_array(header, boxes, TYPES)
    assert msg.header is header
    assert [d.header for d in msg.detections] == [header, header]
    d = msg.detections[0]
    assert (d.bbox.center.position.x, d.bbox.center.position.y) == (30, 50)
    assert (d.bbox.size_x, d.bbox.size_y, d.bbox.center.theta) == (40, 60, 0.0)
    assert [(r.hypothesis.class_id, r.hypothesis.score) for r in d.results] == [("car", 0.75)]
    assert msg.detections[1].results[0].hypothesis.class_id == "person"


def test_no_boxes_is_an_empty_array_with_the_header() -> None:
    header = SimpleNamespace(frame_id="cam0")
    msg = detection_array(header, [], TYPES)
    assert msg.header is header and msg.detections == []


def test_stamp_in_ns_and_zero_stamp_is_receipt_time() -> None:
    assert stamp_ns(SimpleNamespace(sec=2, nanosec=5), now_ns=99) == 2_000_000_005
    assert stamp_ns(SimpleNamespace(sec=0, nanosec=0), now_ns=99) == 99


def _pixels(h: int, w: int, c: int) -> np.ndarray:
    return np.arange(h * w * c, dtype=np.uint8).reshape(h, w, c)


def test_bgr8_is_a_view_and_padded_rows_are_cut() -> None:
    px = _pixels(3, 4, 3)
    padded = np.zeros((3, 16), np.uint8)
    padded[:, :12] = px.reshape(3, 12)
    data = array.array("B", padded.tobytes())
    out = image_array("bgr8", 3, 4, 16, data)
    assert out.shape == (3, 4, 3) and np.array_equal(out, px)
    assert np.shares_memory(out, np.frombuffer(data, np.uint8))  # no copy in the callback


def test_rgb_rgba_bgra_mono_become_bgr_or_gray() -> None:
    px = _pixels(2, 3, 3)
    assert np.array_equal(image_array("rgb8", 2, 3, 9, px.tobytes()), px[:, :, ::-1])
    rgba = np.concatenate([px, np.full((2, 3, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(image_array("rgba8", 2, 3, 12, rgba.tobytes()), px[:, :, ::-1])
    bgra = np.concatenate([px, np.full((2, 3, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(image_array("bgra8", 2, 3, 12, bgra.tobytes()), px)
    gray = _pixels(2, 3, 1)[:, :, 0]
    assert np.array_equal(image_array("mono8", 2, 3, 3, gray.tobytes()), gray)


def test_bad_images_raise_input_errors_naming_the_field() -> None:
    with pytest.raises(InputError, match="yuv422"):
        image_array("yuv422", 2, 2, 4, bytes(8))
    with pytest.raises(InputError, match="step"):
        image_array("bgr8", 2, 2, 4, bytes(8))
    with pytest.raises(InputError, match="bytes"):
        image_array("bgr8", 2, 2, 6, bytes(8))


def test_compressed_bytes_pass_through_untouched() -> None:
    data = array.array("B", b"\xff\xd8\xff rest of a jpeg")
    assert compressed_payload("jpeg", data) == b"\xff\xd8\xff rest of a jpeg"
    assert compressed_payload("rgb8; jpeg compressed bgr8", data) == bytes(data)
    assert compressed_payload("png", b"\x89PNG") == b"\x89PNG"
    with pytest.raises(InputError, match="h264"):
        compressed_payload("h264", data)
    with pytest.raises(InputError, match="no data"):
        compressed_payload("jpeg", b"")
