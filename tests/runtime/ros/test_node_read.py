"""The node's subscription callbacks read serialized messages (runtime/ros/node.py
read_compressed / read_image): plain CDR straight from the bytes, other encapsulations
through rclpy's deserializer (here a stand-in), bad images as InputError."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.ros import cdr, node
from tests.runtime.ros.test_cdr import COMPRESSED


def header(sec: int = 1, nanosec: int = 2, frame_id: str = "cam") -> SimpleNamespace:
    return SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec), frame_id=frame_id)


def test_plain_cdr_is_read_without_rclpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "_deserialize", lambda raw, t: pytest.fail("deserialized"))
    head, payload = node.read_compressed(COMPRESSED, object)
    assert payload == b"\xff\xd8abc" and head == cdr.header_of(header())


def test_other_encapsulations_go_through_rclpy(monkeypatch: pytest.MonkeyPatch) -> None:
    xcdr2 = b"\x00\x07" + COMPRESSED[2:]
    msg = SimpleNamespace(header=header(5, 6, "f"), format="png", data=b"\x89PNG")
    monkeypatch.setattr(node, "_deserialize", lambda raw, t: msg)
    head, payload = node.read_compressed(xcdr2, object)
    assert (head.sec, head.nanosec, head.frame_id, payload) == (5, 6, "f", b"\x89PNG")
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).tobytes()
    image = SimpleNamespace(
        header=header(), height=2, width=3, encoding="rgb8", step=9, data=pixels
    )
    monkeypatch.setattr(node, "_deserialize", lambda raw, t: image)
    head, array = node.read_image(xcdr2, object)
    assert array.shape == (2, 3, 3) and array[0, 0].tolist() == [2, 1, 0]  # rgb -> bgr


def test_unreadable_frames_are_input_errors() -> None:
    h264 = COMPRESSED[:20] + struct.pack("<I", 5) + b"h264\x00\x00\x00\x00" + COMPRESSED[-9:]
    with pytest.raises(InputError, match="h264"):
        node.read_compressed(h264, object)
    body = struct.pack("<iII", 0, 0, 1) + b"\x00" + b"\x00" * 3 + struct.pack("<II", 2, 3)
    body += struct.pack("<I", 5) + b"yuv4\x00" + b"\x00" * 3 + struct.pack("<II", 6, 12)
    with pytest.raises(InputError, match="yuv4"):
        node.read_image(b"\x00\x01\x00\x00" + body + bytes(12), object)
