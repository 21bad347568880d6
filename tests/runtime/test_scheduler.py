"""Scheduler unit tests: policies, budget drops, micro-batching, shutdown, cancellation."""

from __future__ import annotations

import threading
import time

import pytest

from runtime.errors import ConfigError
from runtime.scheduler import Answered, Dropped, Failed, Job, Scheduler
from runtime.server_config import ServerConfig
from tests.runtime.serving_fakes import FakeDetector, hold, solid, wait_until

pytestmark = pytest.mark.timeout(30)


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: dict[int, object] = {}

    def job(self, tag: int, budget_ms: float = 10_000.0, received: float | None = None) -> Job:
        def done(outcome: object) -> None:
            with self.lock:
                assert tag not in self.outcomes, "a job finished twice"
                self.outcomes[tag] = outcome

        now = time.perf_counter() if received is None else received
        return Job(solid(tag % 256), budget_ms, now, 0.1, on_done=done)  # pixel = tag

    def kind(self, tag: int) -> str:
        o = self.outcomes[tag]
        return o.reason if isinstance(o, Dropped) else type(o).__name__


def _busy(det: FakeDetector, sched: Scheduler, lane, rec: Recorder, tag: int = 0) -> None:
    """Submit one job and wait until the model is blocked computing it."""
    hold(det)
    sched.submit(lane, rec.job(tag))
    assert det.started.wait(5)


@pytest.fixture
def det() -> FakeDetector:
    return FakeDetector()


def test_keep_latest_supersedes_waiting_frame(det: FakeDetector) -> None:
    sched, rec = Scheduler(det), Recorder()
    sched.start()
    lane = sched.open_lane()
    _busy(det, sched, lane, rec)
    for tag in (1, 2, 3):
        sched.submit(lane, rec.job(tag))
    assert rec.kind(1) == rec.kind(2) == "superseded"  # decided at once, before the model frees
    det.gate.set()
    wait_until(lambda: len(rec.outcomes) == 4)
    assert [rec.kind(t) for t in (0, 3)] == ["Answered", "Answered"]
    assert det.seen_values == [0, 3]
    sched.begin_shutdown()
    assert sched.join(5)


def test_queue_policy_bounds_and_keeps_order(det: FakeDetector) -> None:
    sched, rec = Scheduler(det, ServerConfig(policy="queue", queue_size=2)), Recorder()
    sched.start()
    lane = sched.open_lane()
    _busy(det, sched, lane, rec)
    for tag in (1, 2, 3, 4):
        sched.submit(lane, rec.job(tag))
    assert rec.kind(3) == rec.kind(4) == "queue_full"
    det.gate.set()
    wait_until(lambda: len(rec.outcomes) == 5)
    assert det.seen_values == [0, 1, 2]
    sched.begin_shutdown()


def test_frame_that_waited_past_its_budget_is_dropped(det: FakeDetector) -> None:
    sched, rec = Scheduler(det, ServerConfig(predict_drops=False)), Recorder()
    sched.start()
    lane_a, lane_b = sched.open_lane(), sched.open_lane()
    _busy(det, sched, lane_a, rec)
    sched.submit(lane_b, rec.job(1, budget_ms=5.0, received=time.perf_counter() - 0.05))
    det.gate.set()
    wait_until(lambda: len(rec.outcomes) == 2)
    assert rec.kind(1) == "budget_exceeded"
    assert "over its budget of 5 ms" in rec.outcomes[1].detail
    assert det.seen_values == [0]
    sched.begin_shutdown()


def test_predicted_miss_is_dropped_only_when_the_model_fits_the_budget(det: FakeDetector) -> None:
    sched, rec = Scheduler(det), Recorder()
    sched.set_service_estimate(20.0)
    now = time.perf_counter()
    late = rec.job(1, budget_ms=30.0, received=now - 0.015)  # 15 ms waited + 20 ms > 30 ms
    assert sched._budget_drop(late, now) is not None
    fresh = rec.job(2, budget_ms=30.0, received=now - 0.005)
    assert sched._budget_drop(fresh, now) is None
    # model slower than the budget: only frames whose wait exceeds the budget are dropped
    slow = rec.job(3, budget_ms=10.0, received=now - 0.005)
    assert sched._budget_drop(slow, now) is None


def test_expected_service_time_is_a_high_quantile_of_recent_calls(det: FakeDetector) -> None:
    sched = Scheduler(det, ServerConfig(service_quantile=0.9))
    sched.set_service_estimate(5.0)
    assert sched.expected_service_ms == 5.0
    for ms in [10.0] * 90 + [30.0] * 10:  # the window keeps the last 64: 54 x 10, 10 x 30
        sched._update_estimate(ms)
    assert sched.expected_service_ms == 30.0  # a mean (13.1) would hide the slow tail
    for ms in [10.0] * 64:
        sched._update_estimate(ms)
    assert sched.expected_service_ms == 10.0
    with pytest.raises(ConfigError):
        Scheduler(det, ServerConfig(service_quantile=0.0))


def test_prediction_falls_back_to_a_lower_quantile_the_model_fits(det: FakeDetector) -> None:
    sched = Scheduler(det, ServerConfig(reply_margin_ms=2.0))  # quantile 0.99
    for ms in [10.0] * 92 + [20.0] * 4 + [40.0] * 4:  # 4% of the calls stalled
        sched._update_estimate(ms)
    assert sched.expected_service_ms == 40.0
    assert sched.predicted_ms(50.0) == 40.0  # fits: the 99th percentile
    assert sched.predicted_ms(33.0) == 20.0  # the 95th fits 33 - 2 ms
    assert sched.predicted_ms(20.0) == 10.0  # down to the median
    assert sched.predicted_ms(11.0) is None  # slower than the budget at the median
    now = time.perf_counter()
    rec = Recorder()
    job = rec.job(1, budget_ms=33.0, received=now - 0.012)  # 12 + 20 + 2 > 33
    assert "~20.0 ms of processing" in sched._budget_drop(job, now)


def test_a_stale_estimate_is_measured_again_not_trusted(det: FakeDetector) -> None:
    sched, rec = Scheduler(det, refresh_s=0.05), Recorder()
    sched.set_service_estimate(25.0)  # e.g. a slow warm-up; the model is faster now
    sched.start()
    try:
        time.sleep(0.06)
        # 10 ms waited + 25 ms predicted > 30 ms, but no model call for > refresh_s: run it
        job = rec.job(1, budget_ms=30.0, received=time.perf_counter() - 0.010)
        sched.submit(sched.open_lane(), job)
        wait_until(lambda: rec.outcomes.get(1) is not None)
        assert rec.kind(1) == "Answered"
        assert sched.expected_service_ms < 25.0  # the fake model's real time replaced it
        now = time.perf_counter()
        fresh = rec.job(2, budget_ms=30.0, received=now - 0.010)
        sched._expected_ms, sched._last_call = 25.0, now  # a recent call: prediction applies
        assert sched._budget_drop(fresh, now) is not None
    finally:
        sched.begin_shutdown()


def test_margin_keeps_time_for_the_reply(det: FakeDetector) -> None:
    sched, rec = Scheduler(det, ServerConfig(reply_margin_ms=3.0)), Recorder()
    sched.set_service_estimate(20.0)
    now = time.perf_counter()
    # 8 ms waited + 20 ms + 3 ms margin > 30 ms; without the margin it would fit
    job = rec.job(1, budget_ms=30.0, received=now - 0.008)
    reason = sched._budget_drop(job, now)
    assert reason is not None and "3 ms for the reply" in reason
    assert Scheduler(det, ServerConfig(reply_margin_ms=0.0))._budget_drop(job, now) is None
    # a model slower than budget - margin: only the wait (+ margin) counts
    slow = rec.job(2, budget_ms=21.0, received=now - 0.019)  # 19 + 3 > 21
    assert "over its budget" in sched._budget_drop(slow, now)


def test_micro_batch_across_streams() -> None:
    det = FakeDetector(max_batch=4)
    sched, rec = Scheduler(det, ServerConfig(max_batch=4, max_wait_ms=50.0)), Recorder()
    assert sched.max_batch == 4
    sched.start()
    lanes = [sched.open_lane() for _ in range(4)]
    _busy(det, sched, lanes[0], rec)
    for i, lane in enumerate(lanes[1:], start=1):
        sched.submit(lane, rec.job(i))
    det.gate.set()
    wait_until(lambda: len(rec.outcomes) == 4)
    assert det.batches == [1, 3]
    assert all(rec.outcomes[i].batch_size == 3 for i in (1, 2, 3))
    sched.begin_shutdown()


def test_batch_capped_by_detector() -> None:
    sched = Scheduler(FakeDetector(max_batch=1), ServerConfig(max_batch=8))
    assert sched.max_batch == 1


def test_shutdown_drops_waiting_and_refuses_new(det: FakeDetector) -> None:
    sched, rec = Scheduler(det), Recorder()
    sched.start()
    lane_a, lane_b = sched.open_lane(), sched.open_lane()
    _busy(det, sched, lane_a, rec)
    sched.submit(lane_b, rec.job(1))
    sched.begin_shutdown()
    assert rec.kind(1) == "shutting_down"
    sched.submit(lane_b, rec.job(2))
    assert rec.kind(2) == "shutting_down"
    det.gate.set()  # the running batch still finishes and is answered
    assert sched.join(5)
    assert isinstance(rec.outcomes[0], Answered)


def test_closed_lane_jobs_end_silently(det: FakeDetector) -> None:
    sched, rec = Scheduler(det), Recorder()
    sched.start()
    lane_a, lane_b = sched.open_lane(), sched.open_lane()
    _busy(det, sched, lane_a, rec)
    sched.submit(lane_b, rec.job(1))
    sched.close_lane(lane_b)
    det.gate.set()
    wait_until(lambda: 0 in rec.outcomes)
    sched.begin_shutdown()
    assert sched.join(5)
    assert 1 not in rec.outcomes and det.seen_values == [0]


def test_model_exception_fails_the_batch_and_worker_survives() -> None:
    det = FakeDetector(fail_value=7)
    sched, rec = Scheduler(det), Recorder()
    sched.start()
    lane = sched.open_lane()
    sched.submit(lane, rec.job(7))
    wait_until(lambda: 7 in rec.outcomes)
    assert isinstance(rec.outcomes[7], Failed) and "fake model failure" in rec.outcomes[7].message
    sched.submit(lane, rec.job(1))
    wait_until(lambda: 1 in rec.outcomes)
    assert isinstance(rec.outcomes[1], Answered)
    sched.begin_shutdown()


def test_bad_settings_rejected() -> None:
    with pytest.raises(ConfigError, match="policy"):
        Scheduler(FakeDetector(), ServerConfig(policy="lifo"))
    with pytest.raises(ConfigError, match="queue-size"):
        Scheduler(FakeDetector(), ServerConfig(queue_size=0))


def test_answers_go_out_before_the_book_keeping(det: FakeDetector) -> None:
    # the answer is handed over as soon as the model call ends; the estimate's update
    # and the batch metrics come after it, off the answer's path
    events: list[str] = []
    sched = Scheduler(det, on_batch=lambda n: events.append(f"batch {n}"))
    job = Job(solid(1), 10_000.0, time.perf_counter(), 0.0, lambda o: events.append("answer"))
    sched.submit(sched.open_lane(), job)
    assert sched.run_once(block=False)
    assert events == ["answer", "batch 1"]
    assert sched.expected_service_ms > 0.0  # updated after the answer


def test_unary_calls_share_one_lane_and_do_not_starve_a_stream() -> None:
    """A unary call is not a new stream: under overload (room for one frame per frame
    period) a stream and a caller of unary calls at the same rate get half each. With a
    lane per call every call started with a new lane's credit and the stream got 1 of 300."""
    now = [0.0]
    sched, rec = Scheduler(FakeDetector(), clock=lambda: now[0]), Recorder()
    stream = sched.open_lane()
    for i in range(300):
        now[0] += 0.01
        sched.submit(stream, rec.job(2 * i, budget_ms=1000.0, received=now[0]))
        sched.submit_unary(rec.job(2 * i + 1, budget_ms=1000.0, received=now[0]))
        sched.run_once(block=False)  # one model call per frame period
    answered = [t for t in rec.outcomes if rec.kind(t) == "Answered"]
    stream_share = sum(1 for t in answered if t % 2 == 0) / len(answered)
    assert len(answered) == 300 and 0.45 <= stream_share <= 0.55
    # unary calls queue in order, each with its own answer: none superseded
    assert all(rec.kind(t) != "superseded" for t in rec.outcomes if t % 2 == 1)


def test_unary_lane_is_bounded_and_shut_down_with_the_rest(det: FakeDetector) -> None:
    import runtime.scheduler as scheduler

    sched, rec = Scheduler(det), Recorder()
    sched.start()
    _busy(det, sched, sched.open_lane(), rec)
    for tag in range(1, scheduler.UNARY_QUEUE + 2):
        sched.submit_unary(rec.job(tag))
    assert rec.kind(scheduler.UNARY_QUEUE + 1) == "queue_full"  # the one over the bound
    sched.begin_shutdown()
    assert rec.kind(1) == rec.kind(scheduler.UNARY_QUEUE) == "shutting_down"
    det.gate.set()
    assert sched.join(5)


class _ShortResults(FakeDetector):
    """A detector that breaks its contract: one result fewer than frames."""

    def detect_batch(self, images):
        return super().detect_batch(images)[:-1]


def test_a_broken_result_fails_its_frame_and_the_worker_goes_on() -> None:
    det = _ShortResults(max_batch=2)
    sched, rec = Scheduler(det, ServerConfig(max_batch=2, max_wait_ms=0.0)), Recorder()
    lanes = [sched.open_lane(), sched.open_lane()]
    for tag, lane in enumerate(lanes):
        sched.submit(lane, rec.job(tag))
    assert sched.run_once(block=False)  # both in one batch: one result for two frames
    assert {rec.kind(0), rec.kind(1)} == {"Answered", "Failed"}
    failed = next(o for o in rec.outcomes.values() if isinstance(o, Failed))
    assert "no usable result" in failed.message


def test_the_worker_thread_survives_an_unexpected_error(det: FakeDetector) -> None:
    sched, rec = Scheduler(det), Recorder()
    broken = [True]
    take = sched._take

    def flaky_take(limit, drops):
        if broken[0]:
            broken[0] = False
            raise RuntimeError("a bug in the scheduler")
        return take(limit, drops)

    sched._take = flaky_take
    sched.start()
    lane = sched.open_lane()
    sched.submit(lane, rec.job(0))  # lost to the bug (logged), but the worker goes on
    wait_until(lambda: not broken[0])
    sched.submit(lane, rec.job(1))
    wait_until(lambda: 1 in rec.outcomes)
    assert rec.kind(1) == "Answered"
    sched.begin_shutdown()
    assert sched.join(5)


def test_a_frame_dropped_after_the_batch_wait_is_not_counted_as_service() -> None:
    """max_batch > 1: the frame waits for a fuller batch, misses its budget meanwhile and
    is dropped; its stream is not charged for it, so it stays first in line."""
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    det = FakeDetector(max_batch=2)
    sched, rec = (
        Scheduler(det, ServerConfig(max_batch=2, max_wait_ms=30.0), clock=clock),
        Recorder(),
    )
    lane = sched.open_lane()
    sched.submit(lane, rec.job(0, budget_ms=20.0, received=0.0))
    real_wait = sched._cv.wait

    def wait(timeout=None):  # the batch wait: the fake clock runs on by the whole wait
        now[0] += timeout or 0.0
        return real_wait(0)

    sched._cv.wait = wait
    assert sched.run_once(block=False)
    assert rec.kind(0) == "budget_exceeded" and det.batches == []
    assert (lane.served, lane.missed) == (0, 1)
    assert sched._start_tag(lane) == -1.0  # one frame behind the clock, as before it
