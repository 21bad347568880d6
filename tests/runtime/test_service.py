"""End-to-end service tests: in-process server (ephemeral port) with a fake detector."""

from __future__ import annotations

import math
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2

from runtime.frames import encode_image
from runtime.proto import SERVICE_NAME, pb
from runtime.server import build_server
from runtime.server_config import ServerConfig
from tests.runtime.serving_fakes import (
    FakeDetector,
    hold,
    kinds,
    metric,
    running,
    solid,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)
RECEIVED = "understudy_frames_received_total"


def _good(frame_id: int, value: int = 1) -> pb.Frame:
    img = solid(value, 20, 30)
    return pb.Frame(frame_id=frame_id, encoded=pb.EncodedImage(data=encode_image(img, "png")))


def _bad_frames() -> dict[str, pb.Frame]:
    jpeg = encode_image(solid(5, 20, 30), "jpeg")
    return {
        "empty bytes": pb.Frame(encoded=pb.EncodedImage(data=b"")),
        "corrupt jpeg": pb.Frame(encoded=pb.EncodedImage(data=jpeg[: len(jpeg) // 2])),
        "raw size": pb.Frame(
            raw=pb.RawImage(data=b"\x00" * 10, width=4, height=4, pixel_format=pb.PIXEL_FORMAT_BGR8)
        ),
        "pixel format": pb.Frame(
            raw=pb.RawImage(data=b"\x00" * 48, width=4, height=4, pixel_format=99)
        ),
        "negative budget": pb.Frame(encoded=_good(0).encoded, budget_ms=-1.0),
        "nan budget": pb.Frame(encoded=_good(0).encoded, budget_ms=math.nan),
        "oversized": pb.Frame(encoded=pb.EncodedImage(data=encode_image(solid(1, 48, 64), "png"))),
        "no image": pb.Frame(),
    }


BAD_MESSAGES = {
    "empty bytes": "empty",
    "corrupt jpeg": "corrupt",
    "raw size": "10 bytes",
    "pixel format": "pixel_format",
    "negative budget": "budget_ms",
    "nan budget": "budget_ms",
    "oversized": "--max-pixels",
    "no image": "no image",
}


def test_unary_detect_roundtrip() -> None:
    with running(FakeDetector()) as (srv, client):
        r = client.detect(
            solid(4),
            frame_id=42,
            camera_id="front",
            budget_ms=500,
            capture_time_ns=1_700_000_000_123_456_789,
        )
        assert (r.frame_id, r.camera_id, r.image_width, r.image_height) == (42, "front", 64, 48)
        assert r.capture_time.seconds == 1_700_000_000 and r.capture_time.nanos == 123_456_789
        (d,) = r.detections
        assert (d.x1, d.y1, d.x2, d.y2, d.class_id, d.label) == (0, 0, 32, 24, 1, "car")
        assert r.budget_ms == 500 and r.budget_met and r.batch_size == 1
        t = r.timings
        assert t.total_ms >= t.infer_ms >= 0 and t.decode_ms > 0
        assert client.detect(solid(2), encode="raw").detections[0].label == "dog"
        assert client.detect(solid(2)).budget_ms == 10_000.0  # the server default
        info = client.model_info()
        assert list(info.class_names) == ["person", "car", "dog"]
        assert (info.backend, info.model_hash, info.input_height, info.policy) == (
            "fake",
            "fakehash",
            32,
            "keep-latest",
        )
        assert info.budget_met and "budget 10000 ms" in info.budget_report
        assert not info.HasField("teacher_latency_ms")
        assert metric(srv, "understudy_frames_answered_total", {"rpc": "detect"}) == 3


def test_unary_without_deadline_and_reduced_decode() -> None:
    from runtime.client import DetectorClient

    det = FakeDetector()
    det.spec = det.spec.__class__(class_names=det.spec.class_names, input_size=(320, 320))
    jpeg = encode_image(solid(3, 480, 640), "jpeg")
    with running(det, reduced_decode=True) as (srv, _client):
        with DetectorClient(f"127.0.0.1:{srv.port}") as no_deadline:  # timeout=None
            r = no_deadline.detect(jpeg)
        png = _client.detect(solid(3, 480, 640), encode="png")
    assert det.shapes[-2:] == [(240, 320, 3), (480, 640, 3)]  # JPEG decoded at 1/2, PNG full
    for answer in (r, png):
        (d,) = answer.detections
        assert (d.x1, d.y1, d.x2, d.y2) == (0, 0, 320, 240)  # boxes in the pixels as sent
        assert (answer.image_width, answer.image_height) == (640, 480)


def test_stream_answers_every_frame_in_order() -> None:
    with running(FakeDetector()) as (_srv, client):
        call = client.stream((solid(i % 3, 20, 30) for i in range(30)), budget_ms=10_000)
        got = kinds(list(call))
    assert [f for f, _ in got] == list(range(30))  # one answer per frame, in frame order
    assert got[-1][1] == "result"  # the newest frame is never superseded
    assert {k for _, k in got} <= {"result", "dropped:SUPERSEDED"}


def test_keep_latest_supersedes_while_model_busy() -> None:
    det = FakeDetector()
    with running(det) as (srv, client):
        gate = hold(det)
        call = client.open_stream(budget_ms=10_000, encode="raw")
        responses = iter(call)
        call.send(solid(0), frame_id=0)
        assert det.started.wait(5)
        for i in range(1, 5):
            call.send(solid(i), frame_id=i)
        wait_until(lambda: metric(srv, RECEIVED, {"rpc": "stream"}) == 5)
        gate.set()
        got = kinds([next(responses) for _ in range(5)])
        call.close()
        assert list(responses) == []  # the stream ends cleanly after the last answer
    assert got == [(0, "result")] + [(i, "dropped:SUPERSEDED") for i in (1, 2, 3)] + [(4, "result")]
    assert det.seen_values[-2:] == [0, 4]


def test_frame_waiting_past_budget_gets_drop_notice() -> None:
    det = FakeDetector()
    with running(det) as (srv, client):
        gate = hold(det)
        call = client.open_stream(budget_ms=10_000, encode="raw")
        responses = iter(call)
        call.send(solid(0), frame_id=0)
        assert det.started.wait(5)
        call.send(solid(1), frame_id=1, budget_ms=20)
        wait_until(lambda: metric(srv, RECEIVED, {"rpc": "stream"}) == 2)
        time.sleep(0.05)  # frame 1 now waits longer than its budget
        gate.set()
        first, second = next(responses), next(responses)
        call.cancel()
        assert metric(srv, "understudy_frames_dropped_total", {"reason": "budget_exceeded"}) == 1
    assert kinds([first, second]) == [(0, "result"), (1, "dropped:BUDGET_EXCEEDED")]
    assert "budget of 20 ms" in second.dropped.detail and second.dropped.queue_ms >= 20


def test_queue_policy_bounded_and_answers_in_frame_order() -> None:
    det = FakeDetector()
    with running(det, policy="queue", queue_size=2) as (srv, client):
        gate = hold(det)
        call = client.open_stream(budget_ms=10_000, encode="raw")
        responses = iter(call)
        call.send(solid(0), frame_id=0)
        assert det.started.wait(5)
        for i in range(1, 5):
            call.send(solid(i), frame_id=i)
        wait_until(lambda: metric(srv, RECEIVED, {"rpc": "stream"}) == 5)
        gate.set()
        got = kinds([next(responses) for _ in range(5)])
        call.cancel()
    assert got == [
        (0, "result"),
        (1, "result"),
        (2, "result"),
        (3, "dropped:QUEUE_FULL"),
        (4, "dropped:QUEUE_FULL"),
    ]


def test_unary_budget_drop_and_client_deadline() -> None:
    det = FakeDetector()
    with running(det) as (srv, client):
        gate = hold(det)
        first = threading.Thread(target=client.detect, args=(solid(0),), kwargs={"budget_ms": 5000})
        first.start()
        assert det.started.wait(5)
        errors: list[grpc.RpcError] = []

        def late() -> None:
            try:
                client.detect(solid(1), budget_ms=20)
            except grpc.RpcError as e:
                errors.append(e)

        second = threading.Thread(target=late)
        second.start()
        wait_until(lambda: metric(srv, RECEIVED, {"rpc": "detect"}) >= 2)
        time.sleep(0.05)
        gate.set()
        first.join(5)
        second.join(5)
        assert errors and errors[0].code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "budget_exceeded" in errors[0].details()
        hold(det)
        with pytest.raises(grpc.RpcError) as e:
            client._stub.Detect(_good(1), timeout=0.2)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        det.gate.set()


def test_micro_batching_over_grpc() -> None:
    det = FakeDetector(max_batch=4)
    with running(det, max_batch=4, max_wait_ms=20) as (srv, client):
        assert client.model_info().max_batch == 4
        gate = hold(det)
        calls = [client.open_stream(budget_ms=10_000, encode="raw") for _ in range(4)]
        its = [iter(c) for c in calls]
        calls[0].send(solid(0))
        assert det.started.wait(5)
        for c in calls[1:]:
            c.send(solid(1))
        wait_until(lambda: metric(srv, RECEIVED, {"rpc": "stream"}) == 4)
        gate.set()
        results = [next(it) for it in its]
        for c in calls:
            c.cancel()
    assert [r.result.batch_size for r in results] == [1, 3, 3, 3]
    assert metric(srv, "understudy_batch_size_count") >= 2


def test_health_not_serving_until_warm_then_serving() -> None:
    warm = threading.Event()
    srv = build_server(FakeDetector(warmup_gate=warm), ServerConfig(port=0))
    from runtime.client import DetectorClient

    try:
        with DetectorClient(f"127.0.0.1:{srv.port}", timeout=5) as client:
            assert client.health() == "NOT_SERVING"
            assert client.health(SERVICE_NAME) == "NOT_SERVING"
            for call in (lambda: client.detect(solid(1)), client.model_info):
                with pytest.raises(grpc.RpcError) as e:
                    call()
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            warm.set()
            assert srv.wait_ready(5)
            assert client.health() == client.health(SERVICE_NAME) == "SERVING"
    finally:
        srv.stop(0.5)
    check = srv.health.Check(health_pb2.HealthCheckRequest(service=""), None)
    assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
def test_bad_input_unary_invalid_argument(name: str) -> None:
    with running(FakeDetector(), max_pixels=1000) as (srv, client):
        with pytest.raises(grpc.RpcError) as e:
            client._stub.Detect(_bad_frames()[name], timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert BAD_MESSAGES[name] in e.value.details()
        assert client._stub.Detect(_good(1), timeout=5).frame_id == 1  # still serving
        assert metric(srv, "understudy_frame_errors_total", {"code": "INVALID_ARGUMENT"}) == 1


def test_bad_input_on_stream_reports_error_and_continues() -> None:
    bad = _bad_frames()
    frames = []
    for i, name in enumerate(sorted(bad)):
        frame = pb.Frame()
        frame.CopyFrom(bad[name])
        frame.frame_id = 2 * i
        frames += [frame, _good(2 * i + 1)]
    # policy "queue" so that no good frame is superseded by the next one
    with running(FakeDetector(), max_pixels=1000, policy="queue", queue_size=32) as (_srv, client):
        got = list(client.stream(frames, budget_ms=10_000))
    assert kinds(got) == [
        (f.frame_id, "error:3" if f.frame_id % 2 == 0 else "result") for f in frames
    ]
    messages = [r.error.message for r in got if r.HasField("error")]
    for name, message in zip(sorted(bad), messages):
        assert BAD_MESSAGES[name] in message


def test_an_unexpected_error_preparing_a_frame_answers_it_and_the_stream_goes_on() -> None:
    """Not an InputError (a library error, a bug): the frame gets INTERNAL, the next ones
    their results, and the stream ends (before, its answers stopped and it hung)."""
    with running(FakeDetector(), policy="queue") as (srv, client):
        prepare = srv.servicer.prepare

        def flaky(frame: pb.Frame):
            if frame.frame_id == 1:
                raise RuntimeError("decoder library fault")
            return prepare(frame)

        srv.servicer.prepare = flaky
        got = list(client.stream([solid(1), solid(2), solid(3)], budget_ms=10_000))
    assert kinds(got) == [(0, "result"), (1, "error:13"), (2, "result")]
    assert "decoder library fault" in got[1].error.message


def test_model_failure_is_internal_and_server_survives() -> None:
    with running(FakeDetector(fail_value=13), policy="queue") as (_srv, client):
        with pytest.raises(grpc.RpcError) as e:
            client.detect(solid(13))
        assert e.value.code() == grpc.StatusCode.INTERNAL
        got = kinds(list(client.stream([solid(13), solid(1)], budget_ms=10_000)))
        assert got == [(0, "error:13"), (1, "result")]


def test_max_streams_resource_exhausted_and_released() -> None:
    with running(FakeDetector(), max_streams=1) as (srv, client):
        first = client.open_stream(budget_ms=10_000)
        it = iter(first)
        first.send(solid(1))
        assert next(it).HasField("result")
        second = client.open_stream()
        with pytest.raises(grpc.RpcError) as e:
            next(iter(second))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-streams" in e.value.details()
        first.close()
        assert list(it) == []
        wait_until(lambda: metric(srv, "understudy_active_streams") == 0)
        assert kinds(list(client.stream([solid(1)]))) == [(0, "result")]
        third = client.open_stream(budget_ms=10_000)
        it = iter(third)
        third.send(solid(1))
        assert next(it).HasField("result")
        third.cancel()  # a cancelled stream is released too
        wait_until(lambda: metric(srv, "understudy_active_streams") == 0)
        assert len(srv.servicer._streams) == 0


def test_reflection_lists_services() -> None:
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with running(FakeDetector()) as (_srv, client):
        db = ProtoReflectionDescriptorDatabase(client.channel)
        services = set(db.get_services())
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services
        service = DescriptorPool(db).FindServiceByName(SERVICE_NAME)
        assert {m.name for m in service.methods} == {"Detect", "StreamDetect", "GetModelInfo"}


def test_metrics_endpoint_exposes_counters() -> None:
    with running(FakeDetector(), metrics_port=0) as (srv, client):
        client.detect(solid(1))
        list(client.stream([solid(1), solid(2)], budget_ms=10_000))
        url = f"http://127.0.0.1:{srv.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in (
        'understudy_frames_received_total{rpc="detect"} 1.0',
        'understudy_frames_answered_total{rpc="detect"} 1.0',
        'understudy_stage_duration_seconds_count{stage="infer"}',
        'understudy_stage_duration_seconds_bucket{le="0.033",stage="total"}',
        "understudy_active_streams 0.0",
        "understudy_model_ready 1.0",
        "understudy_budget_misses_total",
    ):
        assert line in text, line
    assert 'understudy_frames_received_total{rpc="stream"} 2.0' in text


def test_graceful_stop_finishes_running_frame_and_drops_waiting() -> None:
    det = FakeDetector()
    srv = build_server(det, ServerConfig(port=0))
    from runtime.client import DetectorClient

    client = DetectorClient(f"127.0.0.1:{srv.port}", timeout=5)
    try:
        assert srv.wait_ready(5)
        gate = hold(det)
        call = client.open_stream(budget_ms=10_000, encode="raw")
        responses = iter(call)
        call.send(solid(0), frame_id=0)
        assert det.started.wait(5)
        call.send(solid(1), frame_id=1)
        wait_until(lambda: metric(srv, RECEIVED, {"rpc": "stream"}) == 2)
        stopper = threading.Thread(target=srv.stop, args=(3.0,))
        stopper.start()
        wait_until(lambda: not srv.servicer.ready)
        gate.set()
        got = kinds(list(responses))  # ends without an error status
        stopper.join(5)
        assert not stopper.is_alive()
    finally:
        client.close()
        srv.stop(0.5)
    assert got == [(0, "result"), (1, "dropped:SHUTTING_DOWN")]


def test_budgets_can_count_from_capture_time() -> None:
    old = time.time_ns() - 5_000_000_000  # captured 5 s ago (under the 10 s clock-skew cap)
    future = time.time_ns() + 60_000_000_000  # a clock a minute ahead: not trusted
    with running(FakeDetector(), deadline_from="capture") as (_srv, client):
        fresh = client.detect(solid(1), budget_ms=2000, encode="raw")
        assert fresh.budget_met
        with pytest.raises(grpc.RpcError) as e:
            client.detect(solid(1), budget_ms=2000, encode="raw", capture_time_ns=old)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "over its budget" in e.value.details()
        skewed = client.detect(solid(1), budget_ms=2000, encode="raw", capture_time_ns=future)
        assert skewed.budget_met  # counted from arrival instead
        call = client.open_stream(budget_ms=2000, encode="raw")
        call.send(solid(1), frame_id=0, capture_time_ns=old)
        call.close()
        assert kinds(list(call)) == [(0, "dropped:BUDGET_EXCEEDED")]
    with running(FakeDetector()) as (_srv, client):  # default: from arrival
        stale = client.detect(solid(1), budget_ms=2000, encode="raw", capture_time_ns=old)
        assert stale.budget_met


def test_by_default_a_streamed_frames_extra_delay_counts_whatever_the_clock_offset() -> None:
    skew = 3_000_000_000  # the client's clock 3 s behind the server's: cancels out

    def stream(**config: object) -> list[tuple[int, str]]:
        # policy queue: no frame is superseded, whatever the machine's speed
        with running(FakeDetector(), policy="queue", queue_size=8, **config) as (_srv, client):
            call = client.open_stream(budget_ms=500, encode="raw")
            for i in range(3):  # on time: the stream's quickest frames
                call.send(solid(i), frame_id=i, capture_time_ns=time.time_ns() - skew)
            # captured 1 s before it was sent (held up on its way): over its 500 ms budget
            call.send(solid(3), frame_id=3, capture_time_ns=time.time_ns() - skew - 10**9)
            call.send(solid(4), frame_id=4)  # no skew: it looks 3 s quicker, so is on time
            call.close()
            return kinds(list(call))

    answered = [(i, "result") for i in range(5)]
    assert stream() == [*answered[:3], (3, "dropped:BUDGET_EXCEEDED"), (4, "result")]
    assert stream(deadline_from="arrival") == answered
    assert stream(deadline_from="capture") == [(i, "dropped:BUDGET_EXCEEDED") for i in range(4)] + [
        (4, "result")
    ]


def test_capture_age_is_reported_so_clock_offsets_show() -> None:
    from tests.runtime.serving_fakes import metric

    behind = time.time_ns() - 3_000_000_000  # a client clock 3 s behind the server's
    ahead = time.time_ns() + 60_000_000_000
    with running(FakeDetector()) as (srv, client):
        r = client.detect(solid(1), budget_ms=2000, encode="raw", capture_time_ns=behind)
        assert 3000 <= r.capture_age_ms < 3000 + 5000  # the offset, plus this call's time
        assert r.budget_met  # counted from arrival (the default), so the answer still comes
        call = client.open_stream(budget_ms=2000, encode="raw")
        call.send(solid(2), frame_id=0, capture_time_ns=behind)
        call.close()
        assert next(iter(call)).result.capture_age_ms >= 3000
        future = client.detect(solid(1), budget_ms=2000, encode="raw", capture_time_ns=ahead)
        assert future.capture_age_ms < -50_000
        now = client.detect(solid(1), encode="raw")  # the client stamps it now by default
        assert 0 <= now.capture_age_ms < 1000
        count = metric(srv, "understudy_capture_age_seconds_count")
        over_2s = count - metric(srv, "understudy_capture_age_seconds_bucket", {"le": "2.5"})
        assert count == 4 and over_2s == 2  # the two 3 s old frames
        assert metric(srv, "understudy_capture_time_future_total") == 1


def test_arrival_jitter_is_the_delay_beyond_the_recent_quickest_frame() -> None:
    from runtime.stream_session import ArrivalJitter

    jitter = ArrivalJitter(window=4)
    offset = 3000.0  # the clocks' offset is in every age
    got = [jitter.excess(offset + a) for a in (5.0, 6.0, 12.0, 5.5, 9.0, 8.0, 7.0, 7.5)]
    # the 5 ms frame leaves the window after 4 frames, then the 5.5 ms one after 4 more
    assert got == [0.0, 1.0, 7.0, 0.5, 3.5, 2.5, 1.5, 0.5]
