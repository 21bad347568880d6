"""Frame scheduling: per-stream lanes, fair service, budget drops, one model worker.

Every stream gets a :class:`Lane`; the unary calls (understudy.v1 ``Detect``, KServe
``ModelInfer``) share one (:meth:`Scheduler.submit_unary`: a lane per call would start
each call with a new lane's credit, ahead of every stream losing frames, and a steady
flow of calls would starve the streams). Decoded frames are submitted to their lane as
:class:`Job` objects; a single worker thread takes jobs from the lanes (FIFO
within a lane, so per-stream order holds) and runs the model one batch at a time. Every
submitted job ends in exactly one call of ``job.on_done`` with an :class:`Answered`,
:class:`Dropped` or :class:`Failed` outcome (a cancelled job ends silently).

Policies (per lane):
- ``keep-latest``: at most one waiting frame; a newer frame replaces it and the replaced
  frame is dropped as ``superseded``.
- ``queue``: up to ``queue_size`` waiting frames; a frame arriving to a full queue is
  dropped as ``queue_full``.
The unary lane always queues (each call waits for its own answer), up to
``UNARY_QUEUE`` calls.

Which lane goes next (``schedule``), among lanes whose first frame can still meet its
budget (the others' frames are dropped as they come up, see below):
- ``deficit`` (default): the lane served least, in frames divided by its weight, goes
  first (start-time fair queueing on a virtual clock ``V``: serving a lane moves its tag
  ``1 / weight`` ahead; ``V`` is the tag of the lane served last). A dropped frame does
  not count as service, so a stream whose frames keep arriving at a bad moment keeps its
  low tag and is served with its next frame; a lane's tag is never more than one frame
  behind ``V`` (``CREDIT_FRAMES``), so an idle or new lane gets at most one frame ahead of
  the others: a new stream is served from its first frame, a stream cannot bank credit.
  Ties (common under overload, where every losing lane sits at the cap) go to the lane
  served longest ago, then to the earliest deadline. Serving the lowest tag is not
  enough on its own: a model call started on a frame that arrived just before another
  stream's frame makes that frame wait a whole call, every period when the streams'
  rates are equal, so it is predicted late and dropped every time. So each lane learns
  its frame spacing and when its frames reach the scheduler (after decoding), and the
  worker may wait for a lane that would go before the lane next in line (a frame behind
  it, or as served and served longer ago), lost its last frame as too late, and has a
  frame due soon (``_hold``). It waits only when it must: when starting the frame in
  line now would make one of those lanes miss its coming frame, the calls that would
  follow being played forward on the expected call time (``_would_miss``); then until
  the frame in line would stop being meetable, or, two frames ahead, at most one
  expected model call. Lanes that lose nothing are never waited for, so with capacity to
  spare no frame waits, and a lane whose frames arrive with too little budget left to be
  answered in time is not waited for either. The waits are counted (``stats``, exported
  as metrics): a wait that was not needed idles the model.
- ``edf``: the earliest deadline that can still be met goes first.
- ``arrival``: lanes in the order their waiting frame arrived (the scheduler before
  ``deficit``; kept for comparison). Under overload at equal frame rates it phase-locks:
  a stream whose frames arrive just after the others' waits a whole model call every
  time, is dropped every time, and its drop uses its turn (``tests/runtime/
  test_scheduler_fairness.py`` reproduces it).

Weights: a frame's ``priority`` (0 = normal) gives its lane the weight ``1 + priority``
(capped at ``MAX_PRIORITY``), so under overload a stream of priority 1 gets twice the
frames of a stream of priority 0; with enough capacity every stream gets every frame.

Budgets: when the worker takes a job, the time since its budget started (arrival, or
capture with ``--deadline-from capture``) is compared with its budget. A job that can no
longer be answered in time is dropped as ``budget_exceeded``: its wait plus
``reply_margin_ms`` (kept for the answer's trip back to the client) already exceeds the
budget, or (``predict_drops``) its wait plus the expected processing time plus the margin
exceeds it. The expected processing time is the recent tail of the service time under
the current load: the ``service_quantile`` (default the 99th percentile) of the calls of
the last ``SERVICE_WINDOW_S`` seconds (at most ``SERVICE_MAX_CALLS``), so that answered
frames meet their budget in the tail too when other processes share the CPU; a mean or a
long window would hide the slow calls that make answers late. The window is a time, not
a number of calls: while slow calls make the rule drop nearly every frame, the model runs
about once per ``refresh_s`` (below), and a window of the last N calls then kept the slow
ones for N seconds after the load went away (answering one frame a second meanwhile).
A call's service time runs from the moment its frames were admitted to the end of
post-processing, the span a frame admitted now still has ahead of it
(drop notices handed over and the interpreter lock included, not only the model).
When the model alone misses the budget at that quantile (a few stalls on a shared CPU
are enough), the rule predicts with the highest of ``FALLBACK_QUANTILES`` (95th, 90th,
75th percentile, median) that fits (:meth:`Scheduler.predicted_ms`): answers stay on time
except for the calls slower than that. Only a model that misses the budget at the median
is not predicted for: it still answers frames that did not wait past their budget. Nor
is the prediction used when the model has not run for ``refresh_s`` (1 s): an estimate
too pessimistic for the machine now (a slow warm-up, a load that went away) would
otherwise drop every frame and never be corrected, so at least one frame a second is
processed and measured.

Micro-batching: with ``max_batch > 1`` the worker, having taken a first job, waits up to
``max_wait_ms`` for jobs from other lanes and runs them as one ``detect_batch`` call.

Clock: every time is read from ``clock`` (default ``time.perf_counter``, seconds); tests
pass a fake one and drive :meth:`Scheduler.run_once` without the worker thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from runtime.server_config import ServerConfig
from runtime.types import Detections, StageTimings

log = logging.getLogger(__name__)

CREDIT_FRAMES = 1.0  # how far (in frames) a lane's tag may lag behind the virtual clock
MAX_PRIORITY = 15  # a frame's priority is capped here: weights 1..16
SERVICE_WINDOW_S = 2.0  # model calls this recent make the expected processing time...
SERVICE_MAX_CALLS = 256  # ...at most this many
# when the model alone misses the budget at ``service_quantile``, the lower quantiles the
# drop rule falls back to, highest first (see ``Scheduler.predicted_ms``)
FALLBACK_QUANTILES = (0.95, 0.9, 0.75, 0.5)
PERIOD_MAX_S = 1.0  # frame gaps longer than this are pauses, not a stream's frame rate
DUE_TOLERANCE_S = 0.002  # a lane's next frame is awaited this long past its due time
TAG_EPS = 1e-6  # start tags this close (in frames) are equal
ERROR_PAUSE_S = 0.01  # the worker's pause after an unexpected error
UNARY_QUEUE = 1024  # unary calls waiting at most (more are dropped as ``queue_full``)


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
    """One decoded frame waiting for the model. Times are the scheduler's clock, seconds
    (``time.perf_counter()`` in the server)."""

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
    # the frame's priority (0 = normal): its lane's weight is 1 + priority (module docstring)
    priority: int = 0

    @property
    def deadline(self) -> float:
        """When its budget ends (clock seconds)."""
        start = self.received if self.deadline_start is None else self.deadline_start
        return start + self.budget_ms / 1000.0


@dataclass(eq=False)
class Lane:
    """The waiting jobs of one stream (or of all unary calls), and its share of the model."""

    pending: deque[Job] = field(default_factory=deque)
    queued: bool = False  # in the scheduler's ready list
    closed: bool = False
    weight: float = 1.0  # 1 + the priority of its latest frame
    tag: float = -math.inf  # virtual time at which its service so far ends (``deficit``)
    served: int = 0  # frames given to the model
    last_served: float = -math.inf  # when it was last given the model (clock s)
    missed: int = 0  # frames dropped as too late since it was last served
    last_arrival: float = -math.inf  # when its latest frame reached the scheduler (clock s)
    period: float = 0.0  # its frames' recent spacing (s; 0 = not known yet)
    # the latest frame's budget left when it reached the scheduler (s): its budget minus
    # the time its budget had already run (decoding, and lateness under jitter/capture)
    budget_left: float = 0.0

    def note_arrival(self, job: Job) -> None:
        """Track the frame spacing and budget left, to tell when the lane's next frame is
        due at the scheduler and until when it could start. Times are when frames are
        submitted, after decoding: a frame is received a decode earlier than it can run."""
        at = job.enqueued
        gap = at - self.last_arrival
        if 0.0 < gap < PERIOD_MAX_S:
            self.period = gap if self.period == 0.0 else 0.8 * self.period + 0.2 * gap
        self.last_arrival = at
        self.budget_left = job.deadline - at


class Scheduler:
    """One model worker thread fed by per-lane queues (see the module docstring)."""

    def __init__(
        self,
        detector: DetectorLike,
        config: ServerConfig | None = None,
        *,
        refresh_s: float = 1.0,
        on_batch: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``config``: the server's settings (``policy``, ``queue_size``, ``max_batch``,
        ``max_wait_ms``, ``predict_drops``, ``reply_margin_ms``, ``service_quantile``,
        ``schedule``; default ``ServerConfig()``); raises ConfigError for bad ones.
        ``on_batch`` is called with the size of every batch the model runs; ``clock``
        gives the time in seconds (jobs' times must use the same clock)."""
        config = config if config is not None else ServerConfig()
        config.validate()
        self.detector = detector
        self.config = config
        self.policy = config.policy
        self.schedule = config.schedule
        self.queue_size = config.queue_size
        self.max_batch = max(1, min(config.max_batch, int(getattr(detector, "max_batch", 1) or 1)))
        self.max_wait_s = config.max_wait_ms / 1000.0
        self.predict_drops = config.predict_drops
        self.margin_ms = float(config.reply_margin_ms)
        self.service_quantile = float(config.service_quantile)
        self.refresh_s = float(refresh_s)
        self._clock = clock
        self._last_call = clock()  # end of the last model call
        self._on_batch = on_batch
        self._cv = threading.Condition()
        self._ready: list[Lane] = []  # lanes with waiting jobs, in the order they got them
        self._lanes: weakref.WeakSet[Lane] = weakref.WeakSet()  # open lanes
        self.hold_until: float | None = None  # set by run_once(block=False) when it holds
        self._vtime = 0.0  # the virtual clock of the deficit schedule
        self._stopping = False
        self._calls: deque[tuple[float, float]] = deque(maxlen=SERVICE_MAX_CALLS)  # (end, ms)
        self._recent: list[float] = []  # the window's call times (ms), sorted
        self._expected_ms = 0.0  # service_quantile of the recent calls
        self._decided = 0.0  # when the batch being run was admitted (clock s)
        # what the worker did with its time (clock s; read by the metrics, see ``stats``)
        self.busy_s = 0.0  # in model calls (pre- and post-processing included)
        self.held_s = 0.0  # idle in ``_hold`` waits for a stream behind, frames waiting
        self.holds = 0  # such waits
        self.calls = 0  # model calls
        self._unary = Lane()  # shared by the unary calls (never waited for: no period)
        self._thread = threading.Thread(target=self._run, name="understudy-infer", daemon=True)

    # ----------------------------------------------------------------- public API
    def start(self) -> None:
        self._thread.start()

    def set_service_estimate(self, ms: float) -> None:
        """Seed the expected processing time (e.g. from the warm-up latency probe); the
        model calls that follow replace it."""
        with self._cv:
            self._calls.clear()
            self._recent = []
            self._expected_ms = float(ms)

    def stats(self) -> dict[str, float]:
        """The worker's counters so far: ``calls`` (model calls), ``busy_s`` (seconds in
        them), ``holds`` and ``held_s`` (waits for a stream behind while frames waited,
        and their seconds; ``deficit`` only). A model that is idle while frames are
        dropped shows here as ``busy_s`` far below the elapsed time."""
        return {
            "calls": self.calls,
            "busy_s": self.busy_s,
            "holds": self.holds,
            "held_s": self.held_s,
        }

    @property
    def expected_service_ms(self) -> float:
        """The ``service_quantile`` of recent model-call times (ms; 0 before any)."""
        return self._expected_ms

    def open_lane(self) -> Lane:
        lane = Lane()
        with self._cv:
            self._lanes.add(lane)
        return lane

    def submit(self, lane: Lane, job: Job) -> None:
        """Queue ``job`` on ``lane`` under the policy; drops call ``on_done`` right away.
        The job's ``priority`` sets the lane's weight from now on."""
        self._enqueue(lane, job, self.policy, self.queue_size)

    def submit_unary(self, job: Job) -> None:
        """Queue the frame of a unary call on the lane all unary calls share (in order, up
        to ``UNARY_QUEUE`` waiting); a call that ends before its answer sets
        ``job.cancelled``. The job's ``priority`` sets that lane's weight from now on."""
        self._enqueue(self._unary, job, "queue", UNARY_QUEUE)

    def _enqueue(self, lane: Lane, job: Job, policy: str, limit: int) -> None:
        drops: list[tuple[Job, str, str]] = []
        with self._cv:
            job.enqueued = self._clock()
            if self._stopping:
                drops.append((job, "shutting_down", "the server is shutting down"))
            elif lane.closed:
                job.cancelled = True
            elif policy == "keep-latest":
                while lane.pending:
                    old = lane.pending.popleft()
                    drops.append((old, "superseded", "a newer frame arrived while it waited"))
                lane.pending.append(job)
            elif len(lane.pending) >= limit:
                drops.append((job, "queue_full", f"{limit} frames already waiting"))
            else:
                lane.pending.append(job)
            if not job.cancelled:
                lane.weight = 1.0 + min(max(int(job.priority), 0), MAX_PRIORITY)
                if lane is not self._unary:  # unary calls have no frame rate to wait for
                    lane.note_arrival(job)
            if lane.pending and not lane.queued:
                lane.queued = True
                self._ready.append(lane)
                self._cv.notify()
        self._finish_drops(drops)

    def close_lane(self, lane: Lane) -> None:
        """Forget a finished lane; its waiting jobs are cancelled (no callbacks)."""
        with self._cv:
            lane.closed = True
            self._lanes.discard(lane)
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
            try:
                if not self.run_once():
                    return
            except Exception:  # a bug must not stop the model worker: log it, go on
                log.exception("the model worker hit an error; it goes on with the next frames")
                time.sleep(ERROR_PAUSE_S)  # never a busy loop if it keeps failing

    def run_once(self, block: bool = True) -> bool:
        """Take the next batch (dropping the frames that cannot be in time) and run it.
        Returns False when shutting down, or with ``block=False`` when nothing can run now:
        nothing waits, or the worker holds for a stream behind until ``hold_until`` (the
        worker thread calls it in a loop; tests call it directly with a fake clock)."""
        drops: list[tuple[Job, str, str]] = []
        batch: list[Job] = []
        held = False  # one wait for a stream behind counts once, however often it wakes
        with self._cv:
            while True:
                while not self._ready and not self._stopping:
                    if not block:
                        return False
                    self._cv.wait()
                if self._stopping:
                    return False
                now = self._clock()
                self._purge(now, drops)
                hold = self._hold(now) if self._ready else None
                self.hold_until = hold
                if hold is None or drops:  # drop notices go out before any wait
                    break
                if not block:
                    return False
                if not held:
                    self.holds += 1
                    held = True
                began = self._clock()
                self._cv.wait(max(0.0, hold - began))
                self.held_s += max(0.0, self._clock() - began)
            if hold is None and self._ready:
                taken = self._take(self.max_batch, drops)
                if self.max_batch > 1 and len(taken) < self.max_batch and self.max_wait_s > 0:
                    taken = self._fill(taken, drops)
                batch = [job for job, _ in taken]
            decided = self._decided
        self._finish_drops(drops)  # after the decision: counted in the service time
        if batch:
            self._process(batch, decided)
        return True

    def _purge(self, now: float, drops: list[tuple[Job, str, str]]) -> None:
        """Drop the waiting frames that can no longer meet their budget, front first, and
        forget cancelled ones, so that only lanes with a runnable frame compete (lock
        held). Their lanes are not charged: a drop is not service."""
        for lane in list(self._ready):
            while lane.pending:
                job = lane.pending[0]
                reason = None if job.cancelled else self._budget_drop(job, now)
                if reason is None and not job.cancelled:
                    break
                lane.pending.popleft()
                if reason is not None:
                    drops.append((job, "budget_exceeded", reason))
                    lane.missed += 1
            if not lane.pending:
                lane.queued = False
                self._ready.remove(lane)

    def _fill(
        self, batch: list[tuple[Job, Lane]], drops: list[tuple[Job, str, str]]
    ) -> list[tuple[Job, Lane]]:
        """Wait up to ``max_wait_s`` for more jobs to fill a micro-batch (lock held). A job
        the wait pushed past its budget is dropped, and its lane's charge taken back."""
        deadline = self._clock() + self.max_wait_s
        while len(batch) < self.max_batch and not self._stopping:
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            if not self._ready:
                self._cv.wait(remaining)
                continue
            batch += self._take(self.max_batch - len(batch), drops)
        if not batch:
            return batch
        now, keep = self._clock(), []  # the wait may have pushed some past their budget
        self._decided = now
        for job, lane in batch:
            reason = None if job.cancelled else self._budget_drop(job, now)
            if reason:
                drops.append((job, "budget_exceeded", reason))
                self._refund(lane)
            elif not job.cancelled:
                keep.append((job, lane))
        return keep

    def _take(self, limit: int, drops: list[tuple[Job, str, str]]) -> list[tuple[Job, Lane]]:
        """Pop up to ``limit`` runnable jobs in schedule order, each with its lane (lock
        held). A job that cannot meet its budget is dropped and its lane is not charged."""
        batch: list[tuple[Job, Lane]] = []
        now = self._decided = self._clock()
        while self._ready and len(batch) < limit:
            lane = self._pick()
            job = lane.pending.popleft()
            self._ready.remove(lane)
            if lane.pending:
                self._ready.append(lane)  # back of the arrival order
            else:
                lane.queued = False
            if job.cancelled:
                continue
            reason = self._budget_drop(job, now)
            if reason:
                drops.append((job, "budget_exceeded", reason))
                lane.missed += 1
                continue
            self._charge(lane)
            batch.append((job, lane))
        return batch

    def _pick(self) -> Lane:
        """The ready lane whose first job goes next under ``schedule`` (lock held)."""
        if self.schedule == "arrival":
            return self._ready[0]
        if self.schedule == "edf":
            return min(self._ready, key=lambda lane: lane.pending[0].deadline)
        return min(self._ready, key=lambda lane: self._order(lane, lane.pending[0].deadline))

    def _order(self, lane: Lane, deadline: float) -> tuple[float, float, float]:
        """The ``deficit`` order: the least served lane (start tag) first; among lanes as
        little served (tags at the credit cap tie under overload), the one served longest
        ago, then the earliest deadline."""
        return (self._start_tag(lane), lane.last_served, deadline)

    def _hold(self, now: float) -> float | None:
        """Deficit only: the time to wait until before serving the next lane, or None
        (lock held). The lanes waited for are open lanes that would go before the next one
        (a frame or more behind it, or as served and served longer ago), lost their last
        frame as too late, have a frame due soon and could answer it in time. The
        worker waits only when starting the next lane's frame now would cost one of them
        its coming frame: taken in their order, each served after the call before it (a
        model call of the expected time each), one would start past its frame's last
        meetable moment. It then waits for the first of them that is due before the next
        lane's frame stops being meetable (the model idles meanwhile, so the lane behind
        gets its turn instead of arriving just after every call started). Lanes that are
        not losing frames are never waited for: with capacity to spare nobody waits."""
        if self.schedule != "deficit":
            return None
        lane = self._pick()
        job = lane.pending[0]
        ahead = self._start_tag(lane)
        start = job.received if job.deadline_start is None else job.deadline_start
        expected = self.predicted_ms(job.budget_ms) or 0.0  # None: no prediction
        latest = start + (job.budget_ms - self.margin_ms - expected) / 1000.0
        behind = []  # (due, lane, frames behind)
        for other in self._lanes:
            if other.queued or other.period == 0.0 or other.missed == 0:
                continue
            frames = (ahead - self._start_tag(other)) * other.weight
            due = other.last_arrival + other.period
            # a frame or more behind, or as served and served longer ago (it would go
            # first if its frame were here)
            first = frames >= 1.0 - TAG_EPS or (
                abs(frames) < TAG_EPS and other.last_served < lane.last_served
            )
            if first and now < due + DUE_TOLERANCE_S:
                behind.append((due, other, frames))
        if not behind or not self._would_miss(lane, [b[:2] for b in behind], now, expected):
            return None
        hold = None
        for due, _, frames in behind:
            # two frames behind: wait for it even if this frame is then too late, but
            # never longer than one model call
            limit = max(latest, now + self._expected_ms / 1000.0) if frames >= 2.0 else latest
            if due <= limit:
                until = min(due + DUE_TOLERANCE_S, limit)
                hold = until if hold is None else min(hold, until)
        return hold if hold is not None and hold > now else None

    def _would_miss(self, nxt: Lane, behind: list, now: float, expected_ms: float) -> bool:
        """Whether a model call started now on the frame of ``nxt`` (the next lane) makes one of the
        lanes ``behind`` miss its coming frame (lock held). The calls that would follow are
        played forward on the expected time of a call: at each call's end the lane the
        schedule picks among those with a frame by then (the waiting lanes with a frame
        still meetable, and the lanes behind once their frame is due) is served; a lane
        behind that cannot start before its frame's last meetable moment misses it."""
        call = expected_ms / 1000.0
        after = (self.margin_ms + expected_ms) / 1000.0  # a start later than deadline - this misses
        # (order, available from, last start, lane behind?)
        items = [
            (self._order(ln, ln.pending[0].deadline), now, ln.pending[0].deadline - after, False)
            for ln in self._ready
            if ln is not nxt
        ]
        for due, other in behind:
            deadline = due + other.budget_left
            if deadline - after < due:  # its frames arrive too late to be answered in time
                continue
            items.append((self._order(other, deadline), due, deadline - after, True))
        free = now + call
        while any(item[3] for item in items):
            if any(item[3] and item[2] < free for item in items):
                return True
            items = [item for item in items if item[3] or item[2] >= free]  # the others drop
            ready = [item for item in items if item[1] <= free]
            if not ready:
                free = min(item[1] for item in items)
                continue
            items.remove(min(ready))
            free += call
        return False

    def _start_tag(self, lane: Lane) -> float:
        """Where the lane's next frame starts on the virtual clock: its tag, but never more
        than ``CREDIT_FRAMES`` frames behind the clock (no banked credit)."""
        return max(lane.tag, self._vtime - CREDIT_FRAMES / lane.weight)

    def _charge(self, lane: Lane) -> None:
        """Count one frame of service to ``lane`` (lock held)."""
        start = self._start_tag(lane)
        self._vtime = max(self._vtime, start)
        lane.tag = start + 1.0 / lane.weight
        lane.served += 1
        lane.missed = 0
        lane.last_served = self._clock()

    def _refund(self, lane: Lane) -> None:
        """Take back the frame of service :meth:`_charge` counted for a frame that was
        dropped after all (lock held): a drop is not service."""
        lane.tag -= 1.0 / lane.weight
        lane.served -= 1
        lane.missed += 1

    def _budget_drop(self, job: Job, now: float) -> str | None:
        start = job.received if job.deadline_start is None else job.deadline_start
        waited = (now - start) * 1000.0
        margin = self.margin_ms
        if waited + margin > job.budget_ms:
            kept = f" (+{margin:g} ms kept for the reply)" if margin else ""
            return f"waited {waited:.1f} ms{kept}, over its budget of {job.budget_ms:g} ms"
        expected = self.predicted_ms(job.budget_ms)
        stale = now - self._last_call > self.refresh_s  # measure again rather than guess
        if (
            self.predict_drops
            and expected is not None
            and not stale
            and waited + expected + margin > job.budget_ms
        ):
            kept = f" and {margin:g} ms for the reply" if margin else ""
            return (
                f"waited {waited:.1f} ms; with ~{expected:.1f} ms of processing{kept} it would "
                f"miss its budget of {job.budget_ms:g} ms"
            )
        return None

    def _process(self, batch: list[Job], decided: float | None = None) -> None:
        """Run ``batch`` and answer its jobs. The service time recorded for the drop
        rule runs from ``decided`` (when the jobs were admitted; default: now) to the
        end of the call: it includes what happens between the two (drop notices sent,
        the wait for the interpreter lock), which a frame admitted then goes through too."""
        start = self._clock()
        decided = start if decided is None else min(decided, start)
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
        done = self._clock()
        self._last_call = done
        self.busy_s += done - start
        self.calls += 1
        if len(results) != len(batch):
            log.error("the model returned %d results for %d frames", len(results), len(batch))
        for i, job in enumerate(batch):  # the answers first, then the book-keeping
            try:
                dets, st = results[i]
                timings = StageTimings(
                    queue_ms=(start - job.enqueued) * 1000.0,
                    decode_ms=job.decode_ms,
                    preprocess_ms=st.preprocess_ms,
                    # a micro-batch's frames all wait for the whole model call
                    infer_ms=st.extra.get("batch_infer_ms", st.infer_ms),
                    postprocess_ms=st.postprocess_ms,
                    total_ms=(done - job.received) * 1000.0,
                )
            except Exception as e:  # a result missing or malformed: this frame fails alone
                self._call(job, Failed(f"the model gave no usable result: {type(e).__name__}: {e}"))
                continue
            self._call(job, Answered(dets, timings, len(batch)))
        self._update_estimate((done - decided) * 1000.0, done)
        if self._on_batch is not None:
            self._on_batch(len(batch))

    def _update_estimate(self, ms: float, now: float | None = None) -> None:
        """Add one model call (``ms``, ending at ``now``) and recompute the expected time:
        the ``service_quantile`` of the calls of the last ``SERVICE_WINDOW_S`` seconds.

        Only that recent: when frames are dropped because calls were slow (another process
        took the CPU), the model runs about once per ``refresh_s``, and a window of a fixed
        number of calls would keep those slow calls for many seconds after the load went
        away, dropping frames the model could now answer in time."""
        now = self._clock() if now is None else now
        calls = self._calls
        calls.append((now, ms))
        while now - calls[0][0] > SERVICE_WINDOW_S:
            calls.popleft()
        self._recent = sorted(m for _, m in calls)  # at most 256: cheaper than numpy here
        self._expected_ms = self._quantile(self.service_quantile)

    def _quantile(self, q: float) -> float:
        """The ``q`` quantile of the window's call times (ms; lock held, window not empty)."""
        ordered = self._recent
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def predicted_ms(self, budget_ms: float) -> float | None:
        """The processing time the drop rule expects for a frame of ``budget_ms`` (ms), or
        None when it cannot predict a miss (the frame then runs unless it waited past its
        budget): the ``service_quantile`` of the recent calls when the model alone fits
        ``budget_ms`` minus the reply margin at that quantile; else the highest of
        ``FALLBACK_QUANTILES`` at which it fits; None when it misses even at the median.

        Without the fallback a few slow calls (the CPU shared with other processes) that
        put the 99th percentile over the budget switched the prediction off, and every
        frame that had not yet waited past its budget was answered, nearly all late; with
        it, frames are admitted as long as the model usually fits, and those answered late
        are about the calls slower than the quantile used."""
        limit = budget_ms - self.margin_ms
        if not self._recent:  # only the start-up estimate so far
            return self._expected_ms if self._expected_ms <= limit else None
        if self._expected_ms <= limit:
            return self._expected_ms
        for q in FALLBACK_QUANTILES:
            if q < self.service_quantile and (value := self._quantile(q)) <= limit:
                return value
        return None

    def _finish_drops(self, drops: list[tuple[Job, str, str]]) -> None:
        now = self._clock()
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
