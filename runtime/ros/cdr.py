"""The bridge's messages in their serialized (CDR) form, read and written without rclpy.

Why: turning a serialized ROS 2 message into Python message objects and back is Python
work per frame that grows with the detections (every Detection2D is several nested
objects, each field set through a checked property). So the node subscribes to the camera
topic with ``raw=True`` (the callback gets the serialized bytes), reads the few fields it
needs here, and publishes the Detection2DArray as bytes it writes here.

Format: the 4-byte encapsulation header (``00 01 00 00``: plain CDR, little endian; ``00
00``: big endian), then the fields in order; every primitive aligned to its size counted
from the end of the encapsulation header (float64 to 8), strings as uint32 length with the
NUL, the bytes and the NUL, sequences as a uint32 count and the elements. Other
encapsulations (XCDR2) raise ``UnknownEncoding``: the caller deserializes those with rclpy.

Layouts (sensor_msgs, std_msgs; vision_msgs 4.x):

- Header: int32 sec, uint32 nanosec, string frame_id
- CompressedImage: Header, string format, uint8[] data
- Image: Header, uint32 height, uint32 width, string encoding, uint8 is_bigendian,
  uint32 step, uint8[] data
- Detection2DArray: Header, Detection2D[]; Detection2D: Header,
  ObjectHypothesisWithPose[] results, BoundingBox2D bbox, string id;
  ObjectHypothesisWithPose: {string class_id, float64 score}, PoseWithCovariance (position
  xyz, orientation xyzw, float64[36] covariance); BoundingBox2D: center {position {x, y},
  theta}, size_x, size_y
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runtime.errors import InputError
from runtime.ros.convert import Box2D

CDR_LE = b"\x00\x01\x00\x00"
ENDIAN = {b"\x00\x01": "<", b"\x00\x00": ">"}  # encapsulation id -> struct byte order
# PoseWithCovariance at its default: position 0, orientation (0, 0, 0, 1), covariance 0
DEFAULT_POSE = struct.pack("<7d", 0, 0, 0, 0, 0, 0, 1.0) + bytes(36 * 8)
EMPTY_STRING = b"\x01\x00\x00\x00\x00"


class UnknownEncoding(ValueError):
    """A serialized message in an encapsulation this module does not read (e.g. XCDR2)."""


@dataclass(frozen=True)
class RawHeader:
    """A std_msgs/Header read from CDR; ``cdr`` is its little-endian serialized form (what
    the Detection2DArray carries), ``frame_id`` the decoded name."""

    sec: int
    nanosec: int
    frame_id: str
    cdr: bytes


def header_of(header: Any) -> RawHeader:
    """A std_msgs/Header message object (stamp.sec, stamp.nanosec, frame_id) as RawHeader."""
    sec, nanosec, name = int(header.stamp.sec), int(header.stamp.nanosec), header.frame_id
    encoded = name.encode()
    cdr = struct.pack("<iII", sec, nanosec, len(encoded) + 1) + encoded + b"\x00"
    return RawHeader(sec, nanosec, name, cdr)


class _Reader:
    """Reads CDR fields in order from ``buf`` (alignment counted after the 4-byte header)."""

    def __init__(self, buf: bytes | memoryview, what: str) -> None:
        self.buf = memoryview(buf)
        self.what = what
        if len(self.buf) < 4:
            raise InputError(f"{what}: {len(self.buf)} bytes, too short for a ROS message")
        order = ENDIAN.get(bytes(self.buf[:2]))
        if order is None:
            raise UnknownEncoding(f"{what}: encapsulation {bytes(self.buf[:2]).hex()}")
        self.order = order
        self.pos = 4

    def _take(self, fmt: str, size: int) -> int:
        self.pos += -(self.pos - 4) % size
        end = self.pos + size
        if end > len(self.buf):
            raise InputError(f"{self.what}: truncated at byte {self.pos} of {len(self.buf)}")
        (value,) = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos = end
        return value

    def uint8(self) -> int:
        return self._take("B", 1)

    def uint32(self) -> int:
        return self._take("I", 4)

    def int32(self) -> int:
        return self._take("i", 4)

    def octets(self) -> memoryview:
        """A uint8[] (or a string's bytes with its NUL) as a view of the buffer (no copy)."""
        n = self.uint32()
        if self.pos + n > len(self.buf):
            raise InputError(f"{self.what}: a field of {n} bytes runs past the end")
        view = self.buf[self.pos : self.pos + n]
        self.pos += n
        return view

    def text(self) -> bytes:
        """A string's bytes without the NUL."""
        raw = self.octets()
        return bytes(raw[:-1] if len(raw) and raw[-1] == 0 else raw)

    def string(self) -> str:
        return self.text().decode("utf-8", "replace")

    def header(self) -> RawHeader:
        sec, nanosec, name = self.int32(), self.uint32(), self.text()
        cdr = struct.pack("<iII", sec, nanosec, len(name) + 1) + name + b"\x00"
        return RawHeader(sec, nanosec, name.decode("utf-8", "replace"), cdr)


def read_header(buf: bytes | memoryview) -> RawHeader:
    """The header of any serialized message that starts with one (Detection2DArray, Image,
    CompressedImage). Raises UnknownEncoding or InputError."""
    return _Reader(buf, "message").header()


def read_compressed(buf: bytes | memoryview) -> tuple[RawHeader, str, memoryview]:
    """A serialized CompressedImage: (header, format, JPEG/PNG bytes as a view of ``buf``).
    Raises UnknownEncoding (not plain CDR) or InputError (truncated)."""
    r = _Reader(buf, "CompressedImage")
    header = r.header()
    fmt = r.string()
    return header, fmt, r.octets()


@dataclass(frozen=True)
class RawImage:
    """A serialized sensor_msgs/Image's fields; ``data`` is a view of the buffer."""

    header: RawHeader
    height: int
    width: int
    encoding: str
    step: int
    data: memoryview


def read_image(buf: bytes | memoryview) -> RawImage:
    """A serialized Image (see ``RawImage``). Raises UnknownEncoding or InputError."""
    r = _Reader(buf, "Image")
    header = r.header()
    height, width, encoding = r.uint32(), r.uint32(), r.string()
    r.uint8()  # is_bigendian: irrelevant for 8-bit encodings, the only ones read
    step = r.uint32()
    return RawImage(header, height, width, encoding, step, r.octets())


def _pad(out: bytearray, align: int) -> None:
    out += bytes(-(len(out) - 4) % align)


def _string(out: bytearray, text: bytes) -> None:
    _pad(out, 4)
    out += struct.pack("<I", len(text) + 1)
    out += text
    out += b"\x00"


def detection_array_cdr(header: RawHeader, boxes: Sequence[Box2D]) -> bytes:
    """A serialized vision_msgs/Detection2DArray (plain CDR, little endian), the same
    message ``convert.detection_array`` builds: ``header`` on the array and on every
    detection, one hypothesis (class name, score) with the default pose per detection,
    bbox center and size in pixels, theta 0, empty id. Publish it as it is."""
    out = bytearray(CDR_LE)
    out += header.cdr
    _pad(out, 4)
    out += struct.pack("<I", len(boxes))
    for box in boxes:
        _pad(out, 4)
        out += header.cdr
        _pad(out, 4)
        out += b"\x01\x00\x00\x00"  # one result
        _string(out, box.class_id.encode())
        _pad(out, 8)
        out += struct.pack("<d", box.score)
        out += DEFAULT_POSE  # 8-aligned after the score
        out += struct.pack("<5d", box.center_x, box.center_y, 0.0, box.size_x, box.size_y)
        _pad(out, 4)
        out += EMPTY_STRING
    return bytes(out)
