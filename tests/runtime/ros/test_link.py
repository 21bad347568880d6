"""CameraLink against an in-process server with a fake model (no ROS needed)."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from runtime.client import DetectorClient
from runtime.ros.link import CameraLink, TraceFile
from tests.runtime.serving_fakes import CLASS_NAMES, FakeDetector, hold, running, solid, wait_until

pytestmark = pytest.mark.timeout(60)


class Published:
    """Collects on_result calls: (header, boxes)."""

    def __init__(self) -> None:
        self.items: list[tuple[object, list]] = []
        self.lock = threading.Lock()

    def __call__(self, header: object, boxes: list, _response: object) -> None:
        with self.lock:
            self.items.append((header, boxes))


def test_answers_come_back_with_their_headers_and_pixel_boxes(tmp_path: Path) -> None:
    published = Published()
    trace = TraceFile(str(tmp_path / "trace.jsonl"))
    with running(FakeDetector()) as (_, client):
        link = CameraLink(client, "/cam", published, encode="raw", trace=trace)
        link.start()
        for value in (1, 2, 3):
            link.offer(solid(value, h=40, w=80), f"header-{value}", 1_000_000_000 + value)
            wait_until(lambda v=value: len(published.items) == v)
        link.close()
    trace.close()
    assert [h for h, _ in published.items] == ["header-1", "header-2", "header-3"]
    for value, (_, boxes) in zip((1, 2, 3), published.items):
        (box,) = boxes  # the fake's box: the top-left quarter, class value % 3
        assert (box.center_x, box.center_y, box.size_x, box.size_y) == (20, 10, 40, 20)
        assert box.class_id == CLASS_NAMES[value % 3] and box.score == 0.5
    counts = link.counts()
    assert (counts.received, counts.published, counts.bridge_dropped) == (3, 3, 0)
    lines = [json.loads(x) for x in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert [x["stamp_ns"] for x in lines] == [1_000_000_001, 1_000_000_002, 1_000_000_003]
    assert all(x["server_total_ms"] >= 0 and x["published_ns"] > 0 for x in lines)


def test_offer_never_waits_for_a_busy_server_and_every_frame_is_counted() -> None:
    det = FakeDetector()
    published = Published()
    with running(det) as (_, client):
        link = CameraLink(client, "/cam", published, encode="raw")
        link.start()
        gate = hold(det)
        link.offer(solid(0), "first", 1)
        assert det.started.wait(10)  # the model is now busy with frame 0, and stays busy
        for value in range(1, 21):  # returns although nothing can be answered meanwhile
            link.offer(solid(value), f"header-{value}", 1 + value)
        assert not published.items
        gate.set()

        def settled() -> bool:
            c = link.counts()
            return c.published + c.bridge_dropped + sum(c.server_dropped.values()) == 21

        wait_until(settled, timeout=20)
        link.close()
    counts = link.counts()
    assert counts.received == 21
    assert 2 <= counts.published < 21  # the first frame and the latest one at least
    assert counts.bridge_dropped + sum(counts.server_dropped.values()) >= 1
    assert published.items[-1][0] == "header-20"  # the newest frame is never the one dropped
    assert published.items[0][0] == "first"


def test_server_away_drops_frames_without_raising() -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    published = Published()
    client = DetectorClient(f"127.0.0.1:{port}")
    link = CameraLink(client, "/cam", published, encode="raw")
    link.start()
    for value in range(5):
        link.offer(solid(value), value, 1)
    wait_until(lambda: link.counts().bridge_dropped == 5, timeout=15)
    link.close()
    client.close()
    counts = link.counts()
    assert counts.received == 5 and counts.published == 0
    assert counts.bridge_dropped == 5  # replaced in the slot, or lost with the failed call
    assert "5 received, 0 published, 5 dropped (bridge 5, server 0)" in counts.line("/cam")
