"""runtime/ros/cdr.py: serialized CompressedImage / Image read and Detection2DArray written
without rclpy. Byte layouts here are what rclpy's serializer writes (checked against it in
the ROS side env by cdr_check.py)."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from runtime.errors import InputError
from runtime.ros import cdr
from runtime.ros.convert import Box2D

ROOT = Path(__file__).resolve().parents[3]
# CompressedImage{header{stamp 1 s 2 ns, frame_id "cam"}, format "jpeg", data ff d8 61 62 63}
# as rclpy serializes it (the 3 bytes after "jpeg\0" are padding, of any value)
COMPRESSED = bytes.fromhex(
    "00010000 01000000 02000000 04000000 63616d00 05000000 6a706567 00657373 05000000 ffd8616263"
)


def test_a_compressed_image_is_read_from_its_bytes_without_copies() -> None:
    header, fmt, data = cdr.read_compressed(COMPRESSED)
    assert (header.sec, header.nanosec, header.frame_id, fmt) == (1, 2, "cam", "jpeg")
    assert isinstance(data, memoryview) and bytes(data) == b"\xff\xd8abc"
    assert data.obj is COMPRESSED  # a view of the message's buffer
    assert header.cdr == COMPRESSED[4:20]  # the header as the answer carries it


def test_big_endian_messages_are_read_and_answered_little_endian() -> None:
    big = (
        b"\x00\x00\x00\x00"
        + struct.pack(">iII", 1, 2, 4)
        + b"cam\x00"
        + struct.pack(">I", 5)
        + b"jpeg\x00\x00\x00\x00"
        + struct.pack(">I", 5)
        + b"\xff\xd8abc"
    )
    header, fmt, data = cdr.read_compressed(big)
    assert (header.sec, header.nanosec, header.frame_id, fmt, bytes(data)) == (
        1,
        2,
        "cam",
        "jpeg",
        b"\xff\xd8abc",
    )
    assert header.cdr == COMPRESSED[4:20]


def test_an_image_with_padded_rows_is_read() -> None:
    body = struct.pack("<iII", 5, 6, 2) + b"c\x00"
    body += b"\x00\x00" + struct.pack("<II", 2, 3)  # pad to 4, height, width
    body += struct.pack("<I", 5) + b"bgr8\x00" + b"\x00"  # encoding, is_bigendian
    body += b"\x00\x00" + struct.pack("<II", 10, 20) + bytes(range(20))  # pad, step, data
    image = cdr.read_image(b"\x00\x01\x00\x00" + body)
    assert (image.height, image.width, image.encoding, image.step) == (2, 3, "bgr8", 10)
    assert bytes(image.data) == bytes(range(20)) and image.header.frame_id == "c"


def test_truncated_and_unknown_encodings_are_told_apart() -> None:
    with pytest.raises(InputError, match=r"CompressedImage: (truncated|a field)"):
        cdr.read_compressed(COMPRESSED[:-2])
    with pytest.raises(InputError, match="too short"):
        cdr.read_compressed(b"\x00")
    with pytest.raises(cdr.UnknownEncoding):  # XCDR2: rclpy deserializes those instead
        cdr.read_compressed(b"\x00\x07" + COMPRESSED[2:])


def test_detection_array_layout() -> None:
    header = cdr.read_compressed(COMPRESSED)[0]
    assert cdr.detection_array_cdr(header, []) == COMPRESSED[:20] + b"\x00" * 4
    box = Box2D(center_x=10.0, center_y=20.0, size_x=4.0, size_y=6.0, class_id="car", score=0.5)
    out = cdr.detection_array_cdr(header, [box])
    detection = COMPRESSED[4:20]  # its header
    detection += struct.pack("<II", 1, 4) + b"car\x00"  # one result: class_id
    detection += struct.pack("<d", 0.5)  # score: at payload offset 48, 8-aligned already
    detection += struct.pack("<7d", 0, 0, 0, 0, 0, 0, 1) + bytes(288)  # default pose
    detection += struct.pack("<5d", 10, 20, 0, 4, 6)  # bbox center x, y, theta, size
    detection += struct.pack("<I", 1) + b"\x00"  # id ""
    assert out == COMPRESSED[:20] + struct.pack("<I", 1) + detection


def test_messages_match_rclpy(ros_python: Path) -> None:
    script = Path(__file__).with_name("cdr_check.py")
    r = subprocess.run(
        [str(ros_python), str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_the_header_of_any_message_is_read() -> None:
    header = cdr.read_compressed(COMPRESSED)[0]
    array = cdr.detection_array_cdr(header, [])
    assert cdr.read_header(array) == header == cdr.read_header(COMPRESSED)
