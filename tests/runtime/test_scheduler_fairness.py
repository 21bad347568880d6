"""Fair service across streams under overload, on a fake clock (deterministic).

The streams are open-loop cameras and every model call takes a fixed (or seeded) time of
the fake clock (``benchmarks.schedule_sim``): the same arguments give the same answers on
any machine, however loaded.
"""

from __future__ import annotations

import itertools
import random

import pytest

from benchmarks.schedule_sim import Camera, FakeClock, simulate
from runtime.scheduler import SERVICE_WINDOW_S, Scheduler
from runtime.server_config import ServerConfig
from tests.runtime.serving_fakes import FakeDetector

# 4 x 30 FPS against a model of 12.5 ms per frame (80 FPS): 1.5 x overload. Two streams'
# frames arrive 0.4 ms apart: under arrival order the second always waits a whole model
# call behind the first, is predicted late, dropped, and its turn is used up.
MODEL_S = 0.0125
PHASES = (0.0, 0.0083, 0.0167, 0.0171)


def answered(tallies: list) -> list[int]:
    return [t.answered for t in tallies]


def test_arrival_order_phase_locks_and_starves_a_stream() -> None:
    cams = [Camera(30.0, offset=o) for o in PHASES]
    old = answered(simulate(cams, 3.0, MODEL_S, schedule="arrival"))
    assert old[3] == 0 and max(old) == 90  # 3 s, 90 frames, not one answered
    edf = answered(simulate(cams, 3.0, MODEL_S, schedule="edf"))
    assert min(edf) == 0  # equal budgets: earliest deadline = arrival order


def test_default_schedule_shares_the_model_when_phases_lock() -> None:
    cams = [Camera(30.0, offset=o) for o in PHASES]
    tallies = simulate(cams, 3.0, MODEL_S)  # the default: deficit
    counts = answered(tallies)
    assert min(counts) > 0 and max(counts) / min(counts) <= 1.1, counts
    assert sum(t.late for t in tallies) == 0
    # every frame was answered or dropped (the last one may still be waiting at the end)
    assert all(0 <= t.sent - t.answered - sum(t.dropped.values()) <= 1 for t in tallies)


def test_four_bunched_new_streams_take_turns() -> None:
    # all four frames arrive within 3 ms: only two of them can be answered in time per
    # frame period, so which two must rotate
    cams = [Camera(30.0, offset=k * 0.001) for k in range(4)]
    assert min(answered(simulate(cams, 3.0, MODEL_S, schedule="arrival"))) == 0
    counts = answered(simulate(cams, 3.0, MODEL_S))
    assert max(counts) / min(counts) <= 1.1, counts


@pytest.mark.parametrize("schedule", ["deficit", "arrival"])
def test_fairness_ratio_over_random_phases_and_model_times(schedule: str) -> None:
    """30 seeded cases of 4 x 30 FPS at random phases, model time 12.5-16 ms."""
    rng = random.Random(0)
    worst, starved = 1.0, 0
    for _ in range(30):
        cams = [Camera(30.0, offset=rng.random() / 30.0) for _ in range(4)]
        times = [MODEL_S * (1.0 + 0.3 * rng.random()) for _ in range(512)]
        counts = answered(simulate(cams, 3.0, lambda i, t=times: t[i % 512], schedule=schedule))
        starved += counts.count(0)
        worst = max(worst, max(counts) / max(min(counts), 1))
    if schedule == "deficit":
        assert starved == 0 and worst <= 1.5, (starved, worst)
    else:  # the old order: whole streams get nothing
        assert starved > 0 and worst > 10


def test_a_new_stream_is_served_from_its_first_frame() -> None:
    cams = [Camera(30.0, offset=o) for o in PHASES]
    late = Camera(30.0, offset=0.0129, start=1.0)  # joins the overloaded four after 1 s
    tallies = simulate([*cams, late], 2.0, MODEL_S)
    assert tallies[4].first_answer == 0
    counts = answered(tallies)
    assert max(counts[:4]) / min(counts[:4]) <= 1.2, counts


def test_priority_weighs_a_streams_share() -> None:
    # two 60 FPS streams against an 80 FPS model: equal shares without priority, about
    # 2:1 with priority 1 on the first (weight 2)
    cams = [Camera(60.0, offset=0.0), Camera(60.0, offset=0.008)]
    equal = answered(simulate(cams, 3.0, MODEL_S))
    assert abs(equal[0] - equal[1]) <= 3, equal
    cams[0] = Camera(60.0, offset=0.0, priority=1)
    weighted = answered(simulate(cams, 3.0, MODEL_S))
    assert 1.7 <= weighted[0] / weighted[1] <= 2.3, weighted


def test_a_stream_below_its_share_gets_its_frames() -> None:
    # a 5 FPS stream among three 30 FPS streams, against a 50 FPS model (95 FPS offered):
    # it asks for less than its share (12.5 FPS). Once its frame rate is known and it has
    # lost a frame, the model waits for its next frame rather than start a call just
    # before it; the 30 FPS streams share the rest.
    cams = [Camera(30.0, offset=k / 90) for k in range(3)] + [Camera(5.0, offset=0.004)]
    tallies = simulate(cams, 3.0, MODEL_S * 1.6)
    assert tallies[3].answered >= 0.7 * tallies[3].sent, tallies[3]
    assert all(t.answered < 0.6 * t.sent for t in tallies[:3])
    cams[3] = Camera(5.0, offset=0.004)
    arrival = simulate(cams, 3.0, MODEL_S * 1.6, schedule="arrival")
    assert arrival[3].answered < 0.7 * arrival[3].sent


def test_no_waiting_when_there_is_capacity_to_spare() -> None:
    # 30 and 10 FPS streams against a 100 FPS model: every frame is answered at once; the
    # slower stream is a frame behind in service but loses nothing, so nobody waits for it
    cams = [Camera(30.0), Camera(10.0, offset=0.005)]
    tallies = simulate(cams, 3.0, 0.010)
    assert all(t.sent - t.answered <= 1 for t in tallies)  # the last may still be computing
    # at most the other stream's call in progress, then its own: never an idle wait
    assert tallies[0].worst_ms <= 20.0 + 1e-6, tallies[0]


def test_expected_time_is_the_recent_tail_under_the_current_load() -> None:
    clock = FakeClock()
    sched = Scheduler(FakeDetector(), ServerConfig(), clock=clock)  # quantile 0.99
    for _ in range(100):  # a loaded second: every 50th call takes 40 ms
        clock.now += 0.01
        sched._update_estimate(10.0, clock.now)
    assert sched.expected_service_ms == 10.0
    sched._update_estimate(40.0, clock.now)
    sched._update_estimate(40.0, clock.now)
    assert sched.expected_service_ms == 40.0  # the p99 sees the slow calls
    clock.now += SERVICE_WINDOW_S + 0.01  # the load went away: older calls leave the window
    for _ in range(16):
        clock.now += 0.001
        sched._update_estimate(8.0, clock.now)
    assert sched.expected_service_ms == 8.0


def test_the_drop_rule_recovers_soon_after_the_load_goes_away() -> None:
    # Another process takes the CPU for the first 3 s: every call takes 30 ms, and with
    # 2.5 ms of decoding and the 2 ms reply margin no frame of the 33 ms budget can be
    # answered in time, so the rule drops them and the model runs once a second to
    # measure again. Once the load has gone the calls take 16 ms: within the window
    # (2 s) the slow calls are forgotten and the streams get their share again.
    rng = random.Random(3)
    cams = [Camera(30.0, offset=o) for o in _phases(rng, 4, 30.0, apart_s=0.001)]

    def shared_cpu(i: int, now: float) -> float:
        return 0.030 if now < 3.0 else 0.016

    def total(seconds: float, model: object) -> int:
        return sum(answered(simulate(cams, seconds, model, decode_s=0.0025)))

    assert total(3.0, shared_cpu) <= 3  # the measuring calls
    after = total(9.0, shared_cpu) - total(6.0, shared_cpu)  # from 1 s after the window
    steady = total(9.0, 0.016) - total(6.0, 0.016)
    assert after >= 0.95 * steady, (after, steady)


# ---------------------------------------------------------------------- late answers
# 4 x 30 FPS against a ~16 ms model: a 2x overload in which a frame that waited less than
# half the budget can be answered in time.
def _model_with_stalls(stall_every: int | None) -> list[float]:
    """Seeded call times: 16-17.6 ms, and 36 ms (the process descheduled while the CPU is
    shared) on every ``stall_every``-th call on average."""
    rng = random.Random(0)
    times = [0.016 * (1.0 + 0.1 * rng.random()) for _ in range(2000)]
    if stall_every is not None:
        times = [0.036 if rng.random() < 1.0 / stall_every else t for t in times]
    return times


def _late_rate(tallies: list) -> float:
    return sum(t.late for t in tallies) / max(1, sum(t.answered for t in tallies))


def test_a_few_slow_calls_do_not_switch_the_drop_prediction_off() -> None:
    # 3% of the calls take 36 ms: the 99th percentile of the model alone (36 ms) no longer
    # fits the budget. The rule used to stop predicting then and answered every frame that
    # had not yet waited 31 ms: two thirds of the answers were late. It now predicts with
    # the highest lower quantile that fits (here the 95th, ~17.6 ms): only the frames that
    # meet a stall are late, and the streams still share the model.
    cams = [Camera(30.0, offset=o) for o in PHASES]
    times = _model_with_stalls(33)
    tallies = simulate(cams, 20.0, lambda i: times[i % len(times)])
    assert _late_rate(tallies) <= 0.05, [(t.answered, t.late) for t in tallies]
    counts = answered(tallies)
    assert min(counts) > 0 and max(counts) / min(counts) <= 1.5, counts
    # without stalls nothing is late and about as many frames are answered
    calm = _model_with_stalls(None)
    steady = simulate(cams, 20.0, lambda i: calm[i % len(calm)])
    assert _late_rate(steady) == 0.0
    assert sum(counts) >= 0.9 * sum(answered(steady))


def test_the_service_time_counts_from_the_drop_decision() -> None:
    # Between admitting a frame and starting the model, the worker hands over the drop
    # notices of the frames it dropped (here 2 ms each): a frame admitted with just enough
    # time left would miss its budget if the prediction counted the model call only.
    cams = [Camera(30.0, offset=o) for o in PHASES]
    times = _model_with_stalls(None)
    tallies = simulate(cams, 10.0, lambda i: times[i % len(times)], notice_s=0.002)
    assert sum(t.dropped["budget_exceeded"] for t in tallies) > 100  # notices were sent
    # the server's time of every answer leaves the reply margin (2 ms) of the 33 ms budget
    assert max(t.worst_ms for t in tallies) <= 31.0 + 0.5, [t.worst_ms for t in tallies]
    assert _late_rate(tallies) == 0.0


# ------------------------------------------------ waits for a stream behind, in the server
def test_waits_for_streams_behind_with_decoding_before_the_scheduler() -> None:
    """In the server a frame reaches the scheduler a decode (here 2.5 ms) after its receipt,
    where its budget starts. A wait for a stream behind lasts until its frame is submitted
    (a wait timed by receipts ended just before it and idled the model for nothing), is
    taken only when starting the next frame now would cost a stream behind its coming frame,
    and covers a stream as served as the next one but served longer ago (two streams whose
    frames arrive 1-2 ms apart otherwise take turns badly). 30 seeded cases of 4 x 30 FPS at
    random phases at least 1 ms apart against a 16 ms (+-15%) model. (Two streams whose
    frames arrive together can share only one call a period between them whatever the
    order: the others' larger share is then no unfairness.)"""
    rng = random.Random(1)
    worst, starved, late, totals = 1.0, 0, 0, {"deficit": 0, "edf": 0}
    for _ in range(30):
        cams = [Camera(30.0, offset=o) for o in _phases(rng, 4, 30.0, apart_s=0.001)]
        times = [0.016 * (0.85 + 0.3 * rng.random()) for _ in range(512)]
        for schedule in totals:
            tallies = simulate(
                cams, 3.0, lambda i, t=times: t[i % 512], decode_s=0.0025, schedule=schedule
            )
            counts = answered(tallies)
            totals[schedule] += sum(counts)
            if schedule == "deficit":
                starved += counts.count(0)
                worst = max(worst, max(counts) / max(min(counts), 1))
                late += sum(t.late for t in tallies)
    assert starved == 0 and worst <= 1.3, (starved, worst)
    # (the first calls run before any model time is known: the server seeds it, not this)
    assert late <= 0.001 * totals["deficit"], late
    # the price of those waits: a few answers against edf, which starves streams here
    assert totals["deficit"] >= 0.82 * totals["edf"], totals


def test_a_stream_that_cannot_be_answered_in_time_is_not_waited_for() -> None:
    # Its frames reach the server 25 ms into their 33 ms budget (a client far behind, under
    # --deadline-from jitter or capture): none can be answered in time, so the model must
    # not idle waiting for them; the other streams are served as if it were not there
    # (waiting for it cost them half their answers and idled the model 1.4 s of 5).
    cams = [Camera(30.0, offset=k / 90) for k in range(3)]
    late = Camera(30.0, offset=0.005, late_s=0.025)
    alone, with_late = {}, {}
    without = answered(simulate(cams, 5.0, 0.016, decode_s=0.0025, stats=alone))
    tallies = simulate([*cams, late], 5.0, 0.016, decode_s=0.0025, stats=with_late)
    assert answered(tallies)[:3] == without and tallies[3].answered == 0
    assert with_late["holds"] == alone["holds"] and with_late["held_s"] == alone["held_s"]


def _phases(rng: random.Random, n: int, fps: float, apart_s: float) -> list[float]:
    """``n`` random phases in one frame period, at least ``apart_s`` apart (circularly)."""
    period = 1.0 / fps
    while True:
        phases = sorted(rng.random() * period for _ in range(n))
        gaps = [b - a for a, b in itertools.pairwise(phases)] + [phases[0] + period - phases[-1]]
        if min(gaps) >= apart_s:
            return phases


def test_the_worker_counts_its_waits() -> None:
    cams = [Camera(30.0, offset=k * 0.001) for k in range(4)]  # bunched: waits needed
    stats: dict = {}
    simulate(cams, 3.0, MODEL_S, stats=stats)
    assert stats["calls"] > 0 and 0.0 < stats["busy_s"] < 3.0
    assert stats["holds"] > 0 and 0.0 < stats["held_s"] < 3.0 - stats["busy_s"]
    # with capacity to spare: no waits
    simulate([Camera(30.0), Camera(10.0, offset=0.005)], 3.0, 0.010, stats=stats)
    assert stats["holds"] == 0 and stats["held_s"] == 0.0
