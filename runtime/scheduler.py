"""Frame scheduling: per-stream lanes, drop policies, one model worker, micro-batching.

Every stream (and every unary call) gets a :class:`Lane`. Decoded frames are submitted to
their lane as :class:`Job` objects; a single worker thread takes jobs round-robin across
lanes (FIFO within a lane, so per-stream order holds) and runs the model one batch at a
time. Every submitted job ends in exactly one call of ``job.on_done`` with an
:class:`Answered`, :class:`Dropped` or :class:`Failed` outcome (a cancelled job ends
silently).

Policies (per lane):
- ``keep-latest``: at most one waiting frame; a newer frame replaces it and the replaced
  frame is dropped as ``superseded``.
- ``queue``: up to ``queue_size`` waiting frames; a frame arriving to a full queue is
  dropped as ``queue_full``.

Budgets: when the worker takes a job, the time since the server received it is compared
with its budget. A job that can no longer be answered in time is dropped as
``budget_exceeded``: its wait plus ``reply_margin_ms`` (kept for the answer's trip back to
the client) already exceeds the budget, or (``predict_drops``) its wait plus the expected
processing time plus the margin exceeds it. The expected processing time is a high
quantile (``service_quantile``, default the 90th percentile) of the last 64 model calls,
so that the frames that are answered meet their budget in the tail too, not only on
average. The prediction is only used while the model alone fits in the budget; a model
slower than the budget still answers frames that did not wait past it. Nor is it used
when the model has not run for ``refresh_s`` (1 s): an estimate too pessimistic for the
machine now (a slow warm-up, a load that went away) would otherwise drop every frame
and never be corrected, so at least one frame a second is processed and measured.

Micro-batching: with ``max_batch > 1`` the worker, having taken a first job, waits up to
``max_wait_ms`` for jobs from other lanes and runs them as one ``detect_batch`` call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from runtime.server_config import ServerConfig
from runtime.types import Detections, StageTimings

log = logging.getLogger(__name__)


class DetectorLike(Protocol):
    """The part of ``runtime.pipeline.Detector`` the server uses."""

    spec: Any
    backend_name: str
    precision: str
    max_batch: int

    def detect(self, image: np.ndarray) -> tuple[Detections, StageTimings]: ...

    def detect_batch(self, images: list[np.ndarray]) -> list[tuple[Detections, StageTimings]]: ...

    def warmup(self, n: int = 3) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Answered:
    detections: Detections
    timings: StageTimings
    batch_size: int


@dataclass(frozen=True)
class Dropped:
    reason: str  # "superseded" | "budget_exceeded" | "queue_full" | "shutting_down"
    detail: str
    queue_ms: float


@dataclass(frozen=True)
class Failed:
    message: str


Outcome = Answered | Dropped | Failed


@dataclass(eq=False)
class Job:
    """One decoded frame waiting for the model. Times are ``time.perf_counter()`` s."""

    image: np.ndarray
    budget_ms: float
    received: float
    decode_ms: float
    on_done: Callable[[Outcome], None]
    enqueued: float = 0.0
    cancelled: bool = False
    # when the budget started (perf_counter s): ``received``, or earlier when the server
    # counts budgets from the frame's capture time (``--deadline-from capture``)
    deadline_start: float | None = None


@dataclass(eq=False)
class Lane:
    """The waiting jobs of one stream or unary call."""

    pending: deque[Job] = field(default_factory=deque)
    queued: bool = False  # in the scheduler's ready list
    closed: bool = False


class Scheduler:
    """One model worker thread fed by per-lane queues (see the module docstring)."""

    def __init__(
        self,
        detector: DetectorLike,
        config: ServerConfig | None = None,
        *,
        refresh_s: float = 1.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """``config``: the server's settings (``policy``, ``queue_size``, ``max_batch``,
        ``max_wait_ms``, ``predict_drops``, ``reply_margin_ms``, ``service_quantile``;
        default ``ServerConfig()``); raises ConfigError for bad ones. ``on_batch`` is
        called with the size of every batch the model runs."""
        config = config if config is not None else ServerConfig()
        config.validate()
        self.detector = detector
        self.config = config
        self.policy = config.policy
        self.queue_size = config.queue_size
        self.max_batch = max(1, min(config.max_batch, int(getattr(detector, "max_batch", 1) or 1)))
        self.max_wait_s = config.max_wait_ms / 1000.0
        self.predict_drops = config.predict_drops
        self.margin_ms = float(config.reply_margin_ms)
        self.service_quantile = float(config.service_quantile)
        self.refresh_s = float(refresh_s)
        self._last_call = time.perf_counter()  # end of the last model call
        self._on_batch = on_batch
        self._cv = threading.Condition()
        self._ready: deque[Lane] = deque()
        self._stopping = False
        self._service_window: deque[float] = deque(maxlen=64)  # recent batch times, ms
        self._expected_ms = 0.0  # service_quantile of the window
        self._thread = threading.Thread(target=self._run, name="understudy-infer", daemon=True)

    # ----------------------------------------------------------------- public API
    def start(self) -> None:
        self._thread.start()

    def set_service_estimate(self, ms: float) -> None:
        """Seed the expected processing time (e.g. from the warm-up latency probe); the
        model calls that follow replace it."""
        with self._cv:
            self._service_window.clear()
            self._expected_ms = float(ms)

    @property
    def expected_service_ms(self) -> float:
        """The ``service_quantile`` of recent model-call times (ms; 0 before any)."""
        return self._expected_ms

    def open_lane(self) -> Lane:
        return Lane()

    def submit(self, lane: Lane, job: Job) -> None:
        """Queue ``job`` on ``lane`` under the policy; drops call ``on_done`` right away."""
        drops: list[tuple[Job, str, str]] = []
        with self._cv:
            job.enqueued = time.perf_counter()
            if self._stopping:
                drops.append((job, "shutting_down", "the server is shutting down"))
            elif lane.closed:
                job.cancelled = True
            elif self.policy == "keep-latest":
                while lane.pending:
                    old = lane.pending.popleft()
                    drops.append((old, "superseded", "a newer frame arrived while it waited"))
                lane.pending.append(job)
            elif len(lane.pending) >= self.queue_size:
                drops.append((job, "queue_full", f"{self.queue_size} frames already waiting"))
            else:
                lane.pending.append(job)
            if lane.pending and not lane.queued:
                lane.queued = True
                self._ready.append(lane)
                self._cv.notify()
        self._finish_drops(drops)

    def close_lane(self, lane: Lane) -> None:
        """Forget a finished lane; its waiting jobs are cancelled (no callbacks)."""
        with self._cv:
            lane.closed = True
            for job in lane.pending:
                job.cancelled = True
            lane.pending.clear()
            if lane.queued:
                lane.queued = False
                self._ready.remove(lane)

    def begin_shutdown(self) -> None:
        """Refuse new jobs and drop every waiting job as ``shutting_down``; the batch
        being computed finishes and is answered."""
        drops: list[tuple[Job, str, str]] = []
        with self._cv:
            self._stopping = True
            for lane in self._ready:
                lane.queued = False
                drops.extend(
                    (j, "shutting_down", "the server is shutting down") for j in lane.pending
                )
                lane.pending.clear()
            self._ready.clear()
            self._cv.notify_all()
        self._finish_drops(drops)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to exit (after :meth:`begin_shutdown`); True if it did."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # ----------------------------------------------------------------- worker
    def _run(self) -> None:
        while True:
            drops: list[tuple[Job, str, str]] = []
            with self._cv:
                while not self._ready and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                batch = self._take(self.max_batch, drops)
                if self.max_batch > 1 and len(batch) < self.max_batch and self.max_wait_s > 0:
                    deadline = time.perf_counter() + self.max_wait_s
                    while len(batch) < self.max_batch and not self._stopping:
                        remaining = deadline - time.perf_counter()
                        if remaining <= 0:
                            break
                        if not self._ready:
                            self._cv.wait(remaining)
                            continue
                        batch += self._take(self.max_batch - len(batch), drops)
                    if batch:  # the wait may have pushed some past their budget
                        batch = self._recheck(batch, drops)
            self._finish_drops(drops)
            if batch:
                self._process(batch)

    def _take(self, limit: int, drops: list[tuple[Job, str, str]]) -> list[Job]:
        """Pop up to ``limit`` runnable jobs round-robin (lock held)."""
        batch: list[Job] = []
        now = time.perf_counter()
        while self._ready and len(batch) < limit:
            lane = self._ready.popleft()
            job = lane.pending.popleft()
            if lane.pending:
                self._ready.append(lane)
            else:
                lane.queued = False
            if job.cancelled:
                continue
            reason = self._budget_drop(job, now)
            if reason:
                drops.append((job, "budget_exceeded", reason))
            else:
                batch.append(job)
        return batch

    def _recheck(self, batch: list[Job], drops: list[tuple[Job, str, str]]) -> list[Job]:
        now = time.perf_counter()
        keep = []
        for job in batch:
            if job.cancelled:
                continue
            reason = self._budget_drop(job, now)
            if reason:
                drops.append((job, "budget_exceeded", reason))
            else:
                keep.append(job)
        return keep

    def _budget_drop(self, job: Job, now: float) -> str | None:
        start = job.received if job.deadline_start is None else job.deadline_start
        waited = (now - start) * 1000.0
        margin = self.margin_ms
        if waited + margin > job.budget_ms:
            kept = f" (+{margin:g} ms kept for the reply)" if margin else ""
            return f"waited {waited:.1f} ms{kept}, over its budget of {job.budget_ms:g} ms"
        expected = self._expected_ms
        fits = expected + margin <= job.budget_ms
        stale = now - self._last_call > self.refresh_s  # measure again rather than guess
        if self.predict_drops and fits and not stale and waited + expected + margin > job.budget_ms:
            kept = f" and {margin:g} ms for the reply" if margin else ""
            return (
                f"waited {waited:.1f} ms; with ~{expected:.1f} ms of processing{kept} it would "
                f"miss its budget of {job.budget_ms:g} ms"
            )
        return None

    def _process(self, batch: list[Job]) -> None:
        start = time.perf_counter()
        try:
            if len(batch) == 1:
                results = [self.detector.detect(batch[0].image)]
            else:
                results = self.detector.detect_batch([j.image for j in batch])
        except Exception as e:  # the model must never take the server down
            log.exception("model failed on a batch of %d frames", len(batch))
            for job in batch:
                self._call(job, Failed(f"the model failed on this frame: {type(e).__name__}: {e}"))
            return
        done = time.perf_counter()
        self._last_call = done
        self._update_estimate((done - start) * 1000.0)
        if self._on_batch is not None:
            self._on_batch(len(batch))
        for job, (dets, st) in zip(batch, results):
            timings = StageTimings(
                queue_ms=(start - job.enqueued) * 1000.0,
                decode_ms=job.decode_ms,
                preprocess_ms=st.preprocess_ms,
                # a micro-batch's frames all wait for the whole model call
                infer_ms=st.extra.get("batch_infer_ms", st.infer_ms),
                postprocess_ms=st.postprocess_ms,
                total_ms=(done - job.received) * 1000.0,
            )
            self._call(job, Answered(dets, timings, len(batch)))

    def _update_estimate(self, ms: float) -> None:
        window = self._service_window
        window.append(ms)
        ordered = sorted(window)  # at most 64 values: cheaper than numpy for this size
        self._expected_ms = ordered[
            min(len(ordered) - 1, int(self.service_quantile * len(ordered)))
        ]

    def _finish_drops(self, drops: list[tuple[Job, str, str]]) -> None:
        now = time.perf_counter()
        for job, reason, detail in drops:
            self._call(job, Dropped(reason, detail, (now - job.enqueued) * 1000.0))

    @staticmethod
    def _call(job: Job, outcome: Outcome) -> None:
        if job.cancelled:
            return
        try:
            job.on_done(outcome)
        except Exception:
            log.exception("a frame's completion callback failed")
