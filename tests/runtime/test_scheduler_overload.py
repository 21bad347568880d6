"""The scheduler's budget drops through the real server and client.

Under overload the frames that are answered meet their budget at the configured quantile
(and do not when the drop prediction is off); each of ``--no-predict-drops``,
``--service-quantile`` and ``--reply-margin-ms`` changes what the server's scheduler does.
The fake model's time is ``time.sleep``, not CPU, and the margins below are wide, so a
busy machine shifts the numbers without changing the verdicts.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest

from runtime.cli import build_parser
from runtime.client import DetectorClient, StreamCall
from runtime.commands.serve import server_config
from runtime.proto import pb
from runtime.server import RunningServer, build_server
from tests.runtime.serving_fakes import FakeDetector, running, solid

pytestmark = pytest.mark.timeout(60)

# ---------------------------------------------------------------------- overload
MODEL_S = 0.010  # per frame: the model answers at most 100 frames/s
BUDGET_MS = 40.0
STREAMS, FPS, SECONDS = 4, 50.0, 2.0  # 200 frames/s offered: twice what the model can do
QUANTILE = 0.9


def _camera(calls: list[StreamCall]) -> None:
    """Send to every stream at FPS for SECONDS, the streams' frames evenly interleaved
    (open loop, like cameras: on a fixed schedule whatever the server answers)."""
    start = time.perf_counter()
    for k in range(int(SECONDS * FPS) * len(calls)):
        wait = start + k / (FPS * len(calls)) - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        calls[k % len(calls)].send(solid(k % 256), block=False)
    for call in calls:
        call.close()


def _overload(predict_drops: bool) -> tuple[int, list[pb.DetectResponse], Counter[str]]:
    """(frames sent, answers, drop reasons) of STREAMS streams offering twice what the
    model can answer, with the queue policy (frames wait the longest behind others)."""
    det = FakeDetector(delay_s=MODEL_S)
    config = dict(
        budget_ms=BUDGET_MS,
        policy="queue",
        predict_drops=predict_drops,
        service_quantile=QUANTILE,
        reply_margin_ms=2.0,
        latency_probe_runs=5,
        deadline_from="arrival",  # budgets from arrival: budget_met is total_ms <= budget
    )
    with running(det, **config) as (_srv, client):
        calls = [client.open_stream(encode="raw", budget_ms=BUDGET_MS) for _ in range(STREAMS)]
        replies: list[list[pb.StreamResponse]] = [[] for _ in calls]
        readers = [
            threading.Thread(target=lambda c=call, out=out: out.extend(c))
            for call, out in zip(calls, replies)
        ]
        for reader in readers:
            reader.start()
        _camera(calls)
        for reader in readers:
            reader.join(20)
        sent = sum(call.sent for call in calls)
    flat = [r for stream in replies for r in stream]
    answers = [r.result for r in flat if r.WhichOneof("kind") == "result"]
    drops = Counter(pb.DropReason.Name(r.dropped.reason) for r in flat if r.HasField("dropped"))
    assert len(flat) == sent, "every frame sent gets exactly one response"
    return sent, answers, drops


@pytest.mark.parametrize("predict_drops", [True, False])
def test_under_overload_answered_frames_meet_the_budget_at_the_quantile(
    predict_drops: bool,
) -> None:
    sent, answers, drops = _overload(predict_drops)
    assert drops["DROP_REASON_BUDGET_EXCEEDED"] >= sent // 4, f"not overloaded: {drops}"
    assert len(answers) >= 80, f"too few answers to judge a {QUANTILE} quantile: {drops}"
    # the server's own time from the frame's arrival to its answer
    on_time = [a.timings.total_ms <= BUDGET_MS for a in answers]
    assert on_time == [a.budget_met for a in answers]
    fraction = sum(on_time) / len(on_time)
    if predict_drops:
        assert fraction >= QUANTILE, f"{fraction:.3f} of {len(answers)} answers on time"
    else:  # the scenario is one where the prediction is what keeps answers on time
        assert fraction < QUANTILE, f"{fraction:.3f} of {len(answers)} answers on time"


# ---------------------------------------------------------------------- the serve flags
FAST, SLOW = 1, 2  # frame tags (their [0, 0] pixel)


@contextmanager
def _serve(det: FakeDetector, *flags: str) -> Iterator[tuple[RunningServer, DetectorClient]]:
    """A server built from ``understudy serve`` flags (as ``serve`` builds it) for ``det``.
    No latency probe: it would run the slow fake model; the estimate starts at 0 ms."""
    argv = ["serve", "--model", "m.onnx", "--host", "127.0.0.1", "--port", "0", *flags]
    args = build_parser().parse_args(argv)
    config = dataclasses.replace(server_config(args)[0], latency_probe_runs=0)
    server = build_server(det, config)
    try:
        assert server.wait_ready(10)
        with DetectorClient(f"127.0.0.1:{server.port}", timeout=10) as client:
            yield server, client
    finally:
        server.stop(0.5)


def _behind_a_slow_frame(
    client: DetectorClient, det: FakeDetector, budget_ms: float
) -> pb.DetectResponse | grpc.RpcError:
    """Send a SLOW frame and, once the model computes it, a FAST frame with ``budget_ms``,
    which waits for the slow one; returns the FAST frame's answer or error."""
    det.started.clear()
    first: list[pb.DetectResponse] = []
    slow = threading.Thread(
        target=lambda: first.append(client.detect(solid(SLOW), budget_ms=10_000.0))
    )
    slow.start()
    try:
        assert det.started.wait(5)
        return client.detect(solid(FAST), frame_id=1, budget_ms=budget_ms)
    except grpc.RpcError as e:
        return e
    finally:
        slow.join(10)
        assert len(first) == 1, "the slow frame was not answered"


def _predicted_miss(outcome: object) -> str:
    assert isinstance(outcome, grpc.RpcError), f"answered: {outcome}"
    assert outcome.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "would miss its budget" in outcome.details()
    return outcome.details()


def test_no_predict_drops_flag_answers_a_frame_that_will_be_late() -> None:
    # every call takes 300 ms; the second frame waits ~300 ms of its 450 ms budget
    with _serve(FakeDetector(delay_s=0.3)) as (srv, client):
        assert srv.config.predict_drops
        _predicted_miss(_behind_a_slow_frame(client, srv.detector, 450.0))
    with _serve(FakeDetector(delay_s=0.3), "--no-predict-drops") as (srv, client):
        assert not srv.config.predict_drops
        late = _behind_a_slow_frame(client, srv.detector, 450.0)
    assert isinstance(late, pb.DetectResponse), late
    assert not late.budget_met and late.timings.total_ms > 450.0


def test_service_quantile_flag_sets_the_expected_processing_time() -> None:
    # three fast calls and a 300 ms one: the 0.9 quantile is 300 ms, the median ~0 ms
    def model() -> FakeDetector:
        return FakeDetector(delays={SLOW: 0.3})

    outcomes = {}
    for quantile in ("0.9", "0.5"):
        with _serve(model(), "--service-quantile", quantile) as (srv, client):
            assert srv.config.service_quantile == float(quantile)
            for i in range(3):
                client.detect(solid(FAST), frame_id=10 + i)
            outcomes[quantile] = _behind_a_slow_frame(client, srv.detector, 450.0)
    _predicted_miss(outcomes["0.9"])  # waited ~300 + ~300 expected > 450
    answered = outcomes["0.5"]  # waited ~300 + ~0 expected: the fast frame is in time
    assert isinstance(answered, pb.DetectResponse), answered
    assert answered.budget_met


def test_reply_margin_flag_keeps_time_for_the_reply() -> None:
    # every call takes 300 ms; the second frame waits ~300 ms of its 1000 ms budget
    with _serve(FakeDetector(delay_s=0.3)) as (srv, client):
        answered = _behind_a_slow_frame(client, srv.detector, 1000.0)
    assert isinstance(answered, pb.DetectResponse) and answered.budget_met, answered
    with _serve(FakeDetector(delay_s=0.3), "--reply-margin-ms", "600") as (srv, client):
        assert srv.config.reply_margin_ms == 600.0
        details = _predicted_miss(_behind_a_slow_frame(client, srv.detector, 1000.0))
    assert "600 ms for the reply" in details  # ~300 waited + ~300 + 600 > 1000
