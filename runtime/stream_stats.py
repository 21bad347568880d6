"""Client-side accounting of a stream: answered / dropped / errors, end-to-end latency.

Used by ``understudy stream`` and ``benchmarks/stream.py``. End-to-end latency is the time
an answer arrives minus the frame's capture time echoed by the server (both on the
client's clock); "overhead" is end-to-end minus the model's inference time.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import numpy as np

from runtime.client import timestamp_ns
from runtime.proto import pb

STAGES = ("queue", "decode", "preprocess", "postprocess")  # server stages besides infer
ON_ARRIVAL_MS = 1.0  # a budget drop after less time than this in the queue: on arrival


class StreamStats:
    """Client-side accounting of streamed answers (thread-safe).

    ``record`` each StreamResponse as it arrives; end-to-end latency is the arrival time
    minus the frame's echoed capture time (both on this client's clock).
    """

    def __init__(self, window: int = 200) -> None:
        self._lock = threading.Lock()
        self.started = time.perf_counter()
        self.answered = 0
        self.errors = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self.e2e_ms: list[float] = []
        self.answered_at: list[float] = []  # time.perf_counter() of each answer's arrival
        self.infer_ms: list[float] = []
        self.server_total_ms: list[float] = []
        self.stage_ms: dict[str, list[float]] = {k: [] for k in STAGES}
        self.e2e_over_budget = 0
        # how long each frame dropped as over its budget had waited in the server's queue:
        # about 0 when its budget was already spent (or predicted to be) on arrival
        self.budget_drop_queue_ms: list[float] = []
        self.server_budget_misses = 0
        self._recent: collections.deque[tuple[float, float | None]] = collections.deque(
            maxlen=window
        )

    def record(self, response: pb.StreamResponse, arrived_ns: int | None = None) -> None:
        now = time.perf_counter()
        arrived_ns = time.time_ns() if arrived_ns is None else arrived_ns
        kind = response.WhichOneof("kind")
        with self._lock:
            if kind == "result":
                r = response.result
                e2e = (arrived_ns - timestamp_ns(r.capture_time)) / 1e6
                self.answered += 1
                self.e2e_ms.append(e2e)
                self.answered_at.append(now)
                self.infer_ms.append(r.timings.infer_ms)
                self.server_total_ms.append(r.timings.total_ms)
                for k, values in self.stage_ms.items():
                    values.append(getattr(r.timings, f"{k}_ms"))
                self.e2e_over_budget += e2e > r.budget_ms
                self.server_budget_misses += not r.budget_met
                self._recent.append((now, e2e))
            elif kind == "dropped":
                d = response.dropped
                self.dropped[pb.DropReason.Name(d.reason)] += 1
                if d.reason == pb.DROP_REASON_BUDGET_EXCEEDED:
                    self.budget_drop_queue_ms.append(d.queue_ms)
                self._recent.append((now, None))
            else:
                self.errors += 1
                self._recent.append((now, None))

    def live(self) -> dict[str, str]:
        """Short figures over the recent window (for a progress-bar postfix)."""
        with self._lock:
            recent = list(self._recent)
        answered = [e for _, e in recent if e is not None]
        span = recent[-1][0] - recent[0][0] if len(recent) > 1 else 0.0
        fps = (len(answered) - 1) / span if span > 0 and answered else 0.0
        p50 = f"{np.percentile(answered, 50):.1f}ms" if answered else "-"
        return {
            "fps": f"{fps:.1f}",
            "e2e_p50": p50,
            "drops": str(sum(self.dropped.values())),
            "errors": str(self.errors),
        }

    def summary(self, sent: int | None = None, elapsed_s: float | None = None) -> dict[str, Any]:
        """Totals and percentiles (ms); ``drop_rate`` = dropped / frames answered or dropped."""
        with self._lock:
            e2e = np.asarray(self.e2e_ms, np.float64)
            infer = np.asarray(self.infer_ms, np.float64)
            server = np.asarray(self.server_total_ms, np.float64)
            dropped = sum(self.dropped.values())
            elapsed = elapsed_s if elapsed_s is not None else time.perf_counter() - self.started

            def pct(a: np.ndarray, q: float) -> float | None:
                return round(float(np.percentile(a, q)), 3) if a.size else None

            settled = self.answered + dropped
            return {
                "sent": sent,
                "answered": self.answered,
                "dropped": dropped,
                "dropped_by_reason": dict(self.dropped),
                "errors": self.errors,
                "elapsed_s": round(elapsed, 3),
                "delivered_fps": round(self.answered / elapsed, 2) if elapsed > 0 else 0.0,
                "drop_rate": round(dropped / settled, 4) if settled else 0.0,
                "e2e_p50_ms": pct(e2e, 50),
                "e2e_p90_ms": pct(e2e, 90),
                "e2e_p99_ms": pct(e2e, 99),
                "infer_p50_ms": pct(infer, 50),
                "overhead_p50_ms": pct(e2e - infer, 50),
                "server_overhead_p50_ms": pct(server - infer, 50),
                "stage_p50_ms": {
                    k: pct(np.asarray(v, np.float64), 50) for k, v in self.stage_ms.items()
                },
                "budget_miss_rate": round(self.e2e_over_budget / self.answered, 4)
                if self.answered
                else 0.0,
                "server_budget_miss_rate": round(self.server_budget_misses / self.answered, 4)
                if self.answered
                else 0.0,
                **self._budget_drops(),
            }

    def _budget_drops(self) -> dict[str, float | None]:
        """Of the frames dropped as over their budget, the share dropped on arrival (in the
        queue under ``ON_ARRIVAL_MS``: their budget was spent, or predicted to be, before
        the server could run them) and their median queue time (lock held)."""
        q = np.asarray(self.budget_drop_queue_ms, np.float64)
        if not q.size:
            return {"budget_drops_on_arrival": None, "budget_drop_queue_p50_ms": None}
        return {
            "budget_drops_on_arrival": round(float(np.mean(q < ON_ARRIVAL_MS)), 4),
            "budget_drop_queue_p50_ms": round(float(np.percentile(q, 50)), 3),
        }

    def merge(self, other: StreamStats) -> None:
        """Add ``other``'s records to this one (for several streams)."""
        with self._lock, other._lock:
            self.answered += other.answered
            self.errors += other.errors
            self.dropped.update(other.dropped)
            self.e2e_ms += other.e2e_ms
            self.answered_at += other.answered_at
            self.budget_drop_queue_ms += other.budget_drop_queue_ms
            self.infer_ms += other.infer_ms
            self.server_total_ms += other.server_total_ms
            for k, values in other.stage_ms.items():
                self.stage_ms[k] += values
            self.e2e_over_budget += other.e2e_over_budget
            self.server_budget_misses += other.server_budget_misses
