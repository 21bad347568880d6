"""Per-stream metrics: the rates over a recent window, bounded label values, and the
gauges a real server exports for its streams."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from benchmarks.schedule_sim import FakeClock
from runtime.metrics import MAX_STREAM_SERIES, StreamMetrics
from tests.runtime.serving_fakes import FakeDetector, hold, metric, running, solid, wait_until

pytestmark = pytest.mark.timeout(30)


def test_stream_rates_over_the_window() -> None:
    clock = FakeClock()
    m = StreamMetrics(window_s=10.0, clock=clock)
    for i in range(20):  # 2 s of a 10 FPS stream: 12 in time, 4 late, 4 dropped
        clock.now = i * 0.1
        m.record("front", ("answered", "answered", "answered", "late", "dropped")[i % 5])
    clock.now = 2.0
    snap = m.snapshot()["front"]
    assert snap["delivered_fps"] == pytest.approx(16 / 2.0)
    assert snap["drop_rate"] == pytest.approx(4 / 20)
    assert snap["late_rate"] == pytest.approx(4 / 16)
    m.record("", "answered")  # a stream without camera id
    assert "-" in m.snapshot()
    clock.now = 30.0  # silent for longer than the window: forgotten
    assert m.snapshot() == {}


def test_stream_series_are_bounded() -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    m = StreamMetrics(clock=clock)
    registry.register(m)
    for i in range(3 * MAX_STREAM_SERIES):  # e.g. clients that invent a camera id per frame
        clock.now = i * 0.01
        m.record(f"cam{i}", "answered")
    text = generate_latest(registry).decode()
    series = [line for line in text.splitlines() if line.startswith("understudy_stream_drop_rate{")]
    assert len(series) == MAX_STREAM_SERIES
    assert f'stream="cam{3 * MAX_STREAM_SERIES - 1}"' in text  # the newest are kept
    assert 'stream="cam0"' not in text


def test_server_exports_gauges_per_stream() -> None:
    det = FakeDetector()
    with running(det) as (srv, client):
        gate = hold(det)
        call = client.open_stream(camera_id="front", budget_ms=10_000, encode="raw")
        responses = iter(call)
        call.send(solid(0), frame_id=0)
        assert det.started.wait(5)
        for i in (1, 2):  # frame 1 is superseded by frame 2 while the model is busy
            call.send(solid(i), frame_id=i)
        wait_until(lambda: metric(srv, "understudy_frames_received_total", {"rpc": "stream"}) == 3)
        gate.set()
        for _ in range(3):
            next(responses)
        call.close()
        labels = {"stream": "front"}
        assert metric(srv, "understudy_stream_delivered_fps", labels) > 0
        assert metric(srv, "understudy_stream_drop_rate", labels) == pytest.approx(1 / 3)
        assert metric(srv, "understudy_stream_late_rate", labels) == 0.0


def test_a_streams_priority_reaches_its_lane() -> None:
    with running(FakeDetector()) as (srv, client):
        call = client.open_stream(camera_id="front", priority=3, encode="raw")
        responses = iter(call)
        call.send(solid(0), frame_id=0)
        assert next(responses).WhichOneof("kind") == "result"
        assert 4.0 in [lane.weight for lane in srv.scheduler._lanes]  # weight 1 + priority
        call.close()


def test_server_exports_the_model_workers_counters() -> None:
    with running(FakeDetector()) as (srv, client):
        assert metric(srv, "understudy_model_calls_total") == 0.0
        for i in range(3):
            client.detect(solid(i), encode="raw")
        assert metric(srv, "understudy_model_calls_total") == 3.0
        assert metric(srv, "understudy_model_busy_seconds_total") > 0.0
        # one client, nothing to wait for: exported, and zero
        get = srv.metrics.registry.get_sample_value
        assert get("understudy_scheduler_holds_total") == 0.0
        assert get("understudy_scheduler_hold_seconds_total") == 0.0
