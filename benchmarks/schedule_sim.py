"""A deterministic simulation of the scheduler (used by ``benchmarks.schedules`` and the
scheduler tests): a fake clock, open-loop camera streams and
a model whose every call takes a given time, driven through ``Scheduler.run_once`` without
the worker thread. Nothing sleeps: the outcome of a run is a function of its arguments.

``simulate`` returns one :class:`StreamTally` per stream: frames sent, answered, dropped
(by reason) and answered late (server time over the budget).
"""

from __future__ import annotations

import heapq
import inspect
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.scheduler import Answered, Dropped, Job, Scheduler
from runtime.server_config import ServerConfig
from runtime.types import Detections, StageTimings


class FakeClock:
    """A clock the simulation moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Camera:
    """One open-loop stream: frames at ``fps`` from ``start`` + ``offset`` (s) until
    ``stop`` (s), with ``priority``; ``late_s``: how long before its receipt each frame's
    budget started (its way to the server, counted under ``--deadline-from jitter`` or
    ``capture``)."""

    fps: float
    offset: float = 0.0
    start: float = 0.0
    stop: float = float("inf")
    priority: int = 0
    late_s: float = 0.0


@dataclass
class StreamTally:
    sent: int = 0
    answered: int = 0
    late: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    first_answer: int | None = None  # index of the first answered frame
    worst_ms: float = 0.0  # the longest server time of an answered frame


_EMPTY = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))


class SimModel:
    """A detector whose calls take ``model_s(call_index, now)`` seconds of the fake clock
    (``now``: the fake time the call starts); frames
    that arrive meanwhile are submitted at their arrival times (``during`` callback)."""

    max_batch = 1
    spec = None
    backend_name = "sim"
    precision = "fp32"

    def __init__(self, clock: FakeClock, model_s: Callable[[int, float], float]) -> None:
        self.clock = clock
        self.model_s = model_s
        self.calls = 0
        self.during: Callable[[float], None] = lambda end: None

    def detect(self, image: np.ndarray) -> tuple[Detections, StageTimings]:
        end = self.clock.now + self.model_s(self.calls, self.clock.now)
        self.calls += 1
        self.during(end)  # frames that arrive while the model computes
        self.clock.now = end
        return _EMPTY, StageTimings()

    def detect_batch(self, images: list[np.ndarray]) -> list[tuple[Detections, StageTimings]]:
        return [self.detect(image) for image in images]


def _by_call_and_time(model_s: object) -> Callable[[int, float], float]:
    """``model_s`` as a function of (call index, fake time): a constant, a function of the
    call index, or already of both."""
    if not callable(model_s):
        return lambda i, now: float(model_s)  # type: ignore[arg-type]
    params = inspect.signature(model_s).parameters.values()
    if sum(p.default is inspect.Parameter.empty for p in params) >= 2:
        return model_s  # type: ignore[return-value]
    return lambda i, now: model_s(i)  # type: ignore[call-arg]


def simulate(
    cameras: Sequence[Camera],
    duration_s: float,
    model_s: float | Callable[[int], float] | Callable[[int, float], float],
    budget_ms: float = 33.0,
    notice_s: float = 0.0,
    decode_s: float = 0.0,
    stats: dict | None = None,
    **config: object,
) -> list[StreamTally]:
    """Run ``cameras`` against a scheduler built from ``config`` (ServerConfig fields) for
    ``duration_s`` of fake time; one tally per camera. ``notice_s``: the fake time the
    worker spends handing over each drop notice (the server's worker sends them between
    admitting a frame and starting the model on it). ``decode_s``: how long before its
    submission each frame was received (the server decodes a frame between the two, and
    its budget runs from its receipt). ``stats``: a dict to fill with the scheduler's
    ``stats()`` at the end (model calls, busy and held seconds)."""
    clock = FakeClock()
    model = SimModel(clock, _by_call_and_time(model_s))
    sched = Scheduler(model, ServerConfig(**config), clock=clock)  # type: ignore[arg-type]
    lanes = [sched.open_lane() for _ in cameras]
    tallies = [StreamTally() for _ in cameras]
    image = np.zeros((1, 1, 3), np.uint8)
    arrivals = [(c.start + c.offset, k, 0) for k, c in enumerate(cameras)]
    heapq.heapify(arrivals)

    def outcome(k: int, i: int) -> Callable[[object], None]:
        def done(o: object) -> None:
            t = tallies[k]
            if isinstance(o, Answered):
                t.answered += 1
                t.late += o.timings.total_ms > budget_ms
                t.worst_ms = max(t.worst_ms, o.timings.total_ms)
                t.first_answer = i if t.first_answer is None else t.first_answer
            elif isinstance(o, Dropped):
                t.dropped[o.reason] += 1
                clock.now += notice_s

        return done

    def arrive_until(end: float) -> None:
        while arrivals and arrivals[0][0] <= end and arrivals[0][0] < duration_s:
            at, k, i = heapq.heappop(arrivals)
            cam = cameras[k]
            clock.now = at
            if at < cam.stop:
                job = Job(
                    image,
                    budget_ms,
                    at - decode_s,
                    decode_s * 1000.0,
                    outcome(k, i),
                    priority=cam.priority,
                    deadline_start=at - decode_s - cam.late_s if cam.late_s else None,
                )
                sched.submit(lanes[k], job)
                tallies[k].sent += 1
                heapq.heappush(arrivals, (cam.start + cam.offset + (i + 1) / cam.fps, k, i + 1))

    model.during = arrive_until
    # the worker's waits for a stream behind: the simulation, not the scheduler, waits
    holds, held = 0, 0.0
    while arrivals and arrivals[0][0] < duration_s:
        if not sched.run_once(block=False):  # idle or holding: jump to the next event
            hold, began = sched.hold_until, clock.now
            if hold is not None and hold < arrivals[0][0]:
                clock.now = hold
            else:
                arrive_until(arrivals[0][0])
            if hold is not None:
                holds, held = holds + 1, held + clock.now - began
    if stats is not None:
        stats.update(sched.stats(), holds=holds, held_s=held)
    return tallies
