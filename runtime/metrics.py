"""Prometheus metrics for one server, on its own ``CollectorRegistry``.

Each :class:`ServerMetrics` owns a registry, so several servers (tests) in one process
never collide. :meth:`ServerMetrics.serve_http` exposes it with
``prometheus_client.start_http_server``.

Exported series (latency in seconds, Prometheus convention):
- ``understudy_stage_duration_seconds{stage}`` histogram, stage in queue, decode,
  preprocess, infer, postprocess, total;
- ``understudy_frames_received_total{rpc}``, ``understudy_frames_answered_total{rpc}``,
  ``understudy_frames_dropped_total{reason}``, ``understudy_frame_errors_total{code}``;
- ``understudy_budget_misses_total`` (answered frames whose total exceeded the budget);
- ``understudy_active_streams``, ``understudy_model_ready`` gauges;
- ``understudy_batch_size`` histogram (frames per model call);
- ``understudy_model_calls_total``, ``understudy_model_busy_seconds_total`` (the model
  worker's calls and seconds in them: busy seconds well below the elapsed time while
  frames are dropped means the worker idles) and ``understudy_scheduler_holds_total``,
  ``understudy_scheduler_hold_seconds_total`` (the ``deficit`` schedule's waits for a
  stream behind while frames waited);
- ``understudy_capture_age_seconds`` histogram (frames' capture time to arrival on the
  server's clock) and ``understudy_capture_time_future_total``: clock offsets show here;
- ``understudy_raw_stage_duration_seconds{stage}`` histogram, stage in queue, infer, total:
  requests to the KServe ``<name>_raw`` model (the network alone, :mod:`runtime.kserve`),
  kept apart from the frames' stages above;
- per stream (:class:`StreamMetrics`), over the last ``STREAM_WINDOW_S`` seconds:
  ``understudy_stream_delivered_fps{stream}`` (answers per second),
  ``understudy_stream_drop_rate{stream}`` (drop notices / frames settled) and
  ``understudy_stream_late_rate{stream}`` (answers over their budget / answers). The label
  is the frames' ``camera_id`` (streams without one share ``stream="-"``); at most
  ``MAX_STREAM_SERIES`` streams are exported (the least recently active one makes room for
  a new one) and a stream silent for the whole window disappears, so the number of series
  stays bounded whatever the clients send.

With a shadow teacher (:class:`ShadowMetrics`, added by ``ServerMetrics.add_shadow``):
- ``understudy_shadow_true_positives_total{class}``, ``..._false_positives_total{class}``,
  ``..._false_negatives_total{class}``: cumulative student-vs-teacher match counts, so
  ``tp / (tp + fp)`` is the exact precision over any window (``increase()``);
- ``understudy_shadow_precision{class}``, ``understudy_shadow_recall{class}`` gauges
  (cumulative since start; a class appears once it is defined) and
  ``understudy_shadow_overall_precision``, ``understudy_shadow_overall_recall``;
- ``understudy_shadow_frames_compared_total``, ``understudy_shadow_frames_skipped_total{reason}``
  (reason ``busy``: the teacher was still on an earlier frame; ``teacher_error``),
  ``understudy_shadow_frames_saved_total``;
- ``understudy_shadow_teacher_duration_seconds`` histogram (teacher time per frame).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from runtime.types import StageTimings

STAGES = ("queue", "decode", "preprocess", "infer", "postprocess", "total")
RAW_STAGES = ("queue", "infer", "total")  # the KServe <name>_raw model's requests
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.033,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)
_CAPTURE_AGE_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)
_TEACHER_BUCKETS = (*_LATENCY_BUCKETS, 5.0, 10.0, 30.0)
STREAM_WINDOW_S = 10.0  # the per-stream gauges cover this many recent seconds
MAX_STREAM_SERIES = 32  # per-stream label values exported at most


class ServerMetrics:
    """The server's counters, gauges and histograms (one registry per instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.stage_seconds = Histogram(
            "understudy_stage_duration_seconds",
            "Per-frame time spent in each server stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.received = Counter(
            "understudy_frames_received", "Frames received", ["rpc"], registry=r
        )
        self.answered = Counter(
            "understudy_frames_answered", "Frames answered with detections", ["rpc"], registry=r
        )
        self.dropped = Counter(
            "understudy_frames_dropped", "Frames dropped unprocessed", ["reason"], registry=r
        )
        self.errors = Counter(
            "understudy_frame_errors", "Frames rejected (bad input etc.)", ["code"], registry=r
        )
        self.budget_misses = Counter(
            "understudy_budget_misses",
            "Answered frames whose total exceeded the budget",
            registry=r,
        )
        self.active_streams = Gauge(
            "understudy_active_streams", "Open StreamDetect calls", registry=r
        )
        self.model_ready = Gauge(
            "understudy_model_ready", "1 once the model is loaded and warmed up", registry=r
        )
        self.batch_size = Histogram(
            "understudy_batch_size", "Frames per model call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.capture_age_seconds = Histogram(
            "understudy_capture_age_seconds",
            "Frames' capture time to arrival on the server's clock (capture times in the "
            "future count as 0 here and in understudy_capture_time_future); a floor far "
            "above the network's latency means the client's clock is behind",
            buckets=_CAPTURE_AGE_BUCKETS,
            registry=r,
        )
        self.capture_future = Counter(
            "understudy_capture_time_future",
            "Frames whose capture time is ahead of the server's clock (its clock is behind)",
            registry=r,
        )
        self.raw_stage_seconds = Histogram(
            "understudy_raw_stage_duration_seconds",
            "Per-request time of the KServe <name>_raw model (the network alone) in each stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        for stage in STAGES:  # make every series visible from the start
            self.stage_seconds.labels(stage=stage)
        for stage in RAW_STAGES:
            self.raw_stage_seconds.labels(stage=stage)
        self.streams = StreamMetrics()
        r.register(self.streams)
        self.worker = WorkerMetrics()
        r.register(self.worker)
        self._http: Any = None
        self._http_thread: threading.Thread | None = None

    def observe_capture_age(self, age_s: float) -> None:
        """Record one frame's capture-to-arrival age (seconds, server clock)."""
        if age_s < 0:
            self.capture_future.inc()
        self.capture_age_seconds.observe(max(age_s, 0.0))

    def watch_scheduler(self, stats: Callable[[], dict[str, float]]) -> None:
        """Export the model worker's counters (``Scheduler.stats``) from now on."""
        self.worker.source = stats

    def add_shadow(self, class_names: Sequence[str]) -> ShadowMetrics:
        """Register the shadow teacher's series (once per server)."""
        return ShadowMetrics(self.registry, class_names)

    def observe_timings(self, t: StageTimings) -> None:
        """Record one answered frame's stage times (ms in, seconds exported)."""
        values = (
            t.queue_ms,
            t.decode_ms,
            t.preprocess_ms,
            t.infer_ms,
            t.postprocess_ms,
            t.total_ms,
        )
        for stage, ms in zip(STAGES, values):
            self.stage_seconds.labels(stage=stage).observe(ms / 1000.0)

    def observe_raw_timings(self, t: StageTimings) -> None:
        """Record one answered ``<name>_raw`` request's stage times (ms in, seconds out)."""
        for stage, ms in zip(RAW_STAGES, (t.queue_ms, t.infer_ms, t.total_ms)):
            self.raw_stage_seconds.labels(stage=stage).observe(ms / 1000.0)

    def serve_http(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the /metrics HTTP endpoint; returns the bound port (port 0 = ephemeral)."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._http, self._http_thread = server, thread
        return int(server.server_port)

    def stop_http(self) -> None:
        """Stop the HTTP endpoint (no-op when it was never started)."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
            self._http_thread = None


class ShadowMetrics:
    """The shadow teacher's series (see the module docstring) on a server's registry."""

    def __init__(self, registry: CollectorRegistry, class_names: Sequence[str]) -> None:
        r = registry
        self.class_names = tuple(class_names)
        self.compared = Counter(
            "understudy_shadow_frames_compared", "Frames the shadow teacher ran on", registry=r
        )
        self.skipped = Counter(
            "understudy_shadow_frames_skipped",
            "Sampled frames the shadow teacher did not run on",
            ["reason"],
            registry=r,
        )
        self.saved = Counter(
            "understudy_shadow_frames_saved", "Disagreeing frames saved to disk", registry=r
        )
        counts = (
            ("true_positives", "Student boxes matched to a teacher box"),
            ("false_positives", "Student boxes with no teacher match"),
            ("false_negatives", "Teacher boxes with no student match"),
        )
        self.tp, self.fp, self.fn = (
            Counter(f"understudy_shadow_{name}", text, ["class"], registry=r)
            for name, text in counts
        )
        self.precision = Gauge(
            "understudy_shadow_precision",
            "Student precision against the teacher since start",
            ["class"],
            registry=r,
        )
        self.recall = Gauge(
            "understudy_shadow_recall",
            "Student recall against the teacher since start",
            ["class"],
            registry=r,
        )
        self.overall_precision = Gauge(
            "understudy_shadow_overall_precision", "Precision over all classes", registry=r
        )
        self.overall_recall = Gauge(
            "understudy_shadow_overall_recall", "Recall over all classes", registry=r
        )
        self.teacher_seconds = Histogram(
            "understudy_shadow_teacher_duration_seconds",
            "Shadow teacher time per frame (pre-processing to NMS)",
            buckets=_TEACHER_BUCKETS,
            registry=r,
        )
        for reason in ("busy", "teacher_error"):
            self.skipped.labels(reason=reason)
        for name in self.class_names:
            for counter in (self.tp, self.fp, self.fn):
                counter.labels(**{"class": name})

    def observe(
        self,
        frame: tuple[np.ndarray, np.ndarray, np.ndarray],
        total: tuple[np.ndarray, np.ndarray, np.ndarray],
        teacher_ms: float,
    ) -> None:
        """Record one compared frame: ``frame`` and ``total`` are (tp, fp, fn) arrays of
        shape (C,) for this frame and since start."""
        self.compared.inc()
        self.teacher_seconds.observe(teacher_ms / 1000.0)
        for c, name in enumerate(self.class_names):
            label = {"class": name}
            for counter, values in zip((self.tp, self.fp, self.fn), frame):
                if values[c]:
                    counter.labels(**label).inc(float(values[c]))
            tp, fp, fn = (int(v[c]) for v in total)
            if tp + fp:
                self.precision.labels(**label).set(tp / (tp + fp))
            if tp + fn:
                self.recall.labels(**label).set(tp / (tp + fn))
        tp, fp, fn = (int(v.sum()) for v in total)
        if tp + fp:
            self.overall_precision.set(tp / (tp + fp))
        if tp + fn:
            self.overall_recall.set(tp / (tp + fn))


class WorkerMetrics:
    """The model worker's counters (``Scheduler.stats``), read when scraped: model calls,
    seconds busy in them, and the ``deficit`` schedule's waits for a stream behind."""

    SERIES = (
        ("calls", "understudy_model_calls", "Model calls (batches) run"),
        ("busy_s", "understudy_model_busy_seconds", "Seconds the model worker spent in calls"),
        (
            "holds",
            "understudy_scheduler_holds",
            "Times the model worker waited for a stream behind while frames waited",
        ),
        (
            "held_s",
            "understudy_scheduler_hold_seconds",
            "Seconds the model worker waited for a stream behind while frames waited",
        ),
    )

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, float]] | None = None

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(name, text) for _, name, text in self.SERIES]

    def collect(self) -> Iterator[CounterMetricFamily]:
        values = self.source() if self.source is not None else {}
        for key, name, text in self.SERIES:
            yield CounterMetricFamily(name, text, value=float(values.get(key, 0.0)))


class StreamMetrics:
    """Per-stream delivered FPS, drop rate and late rate over a recent window, exported as
    gauges with a bounded number of label values (see the module docstring). ``record``
    costs a lock and a deque append per frame; the rates are computed when scraped."""

    KINDS = ("answered", "late", "dropped")

    def __init__(
        self,
        window_s: float = STREAM_WINDOW_S,
        max_series: int = MAX_STREAM_SERIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = float(window_s)
        self.max_series = int(max_series)
        self._clock = clock
        self._lock = threading.Lock()
        # label -> (first seen, deque of (time, kind)); least recently active first
        self._streams: OrderedDict[str, tuple[float, deque[tuple[float, str]]]] = OrderedDict()

    def record(self, camera_id: str, kind: str) -> None:
        """One frame's outcome on stream ``camera_id``: "answered" (in time), "late"
        (answered over its budget) or "dropped"."""
        label = camera_id or "-"
        now = self._clock()
        with self._lock:
            entry = self._streams.get(label)
            if entry is None:
                if len(self._streams) >= self.max_series:
                    self._streams.popitem(last=False)  # the least recently active
                entry = (now, deque())
                self._streams[label] = entry
            else:
                self._streams.move_to_end(label)
            events = entry[1]
            events.append((now, kind))
            while events and events[0][0] < now - self.window_s:
                events.popleft()

    def snapshot(self) -> dict[str, dict[str, float]]:
        """{stream: {"delivered_fps", "drop_rate", "late_rate"}} over the window, for the
        streams heard from within it (the others are forgotten)."""
        now = self._clock()
        out: dict[str, dict[str, float]] = {}
        with self._lock:
            for label in list(self._streams):
                first, events = self._streams[label]
                while events and events[0][0] < now - self.window_s:
                    events.popleft()
                if not events:
                    del self._streams[label]
                    continue
                n = {k: 0 for k in self.KINDS}
                for _, kind in events:
                    n[kind] += 1
                answers = n["answered"] + n["late"]
                span = max(min(self.window_s, now - first), 1e-3)
                settled = answers + n["dropped"]
                out[label] = {
                    "delivered_fps": answers / span,
                    "drop_rate": n["dropped"] / settled if settled else 0.0,
                    "late_rate": n["late"] / answers if answers else 0.0,
                }
        return out

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families({}))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families(self.snapshot())

    def _families(self, snap: dict[str, dict[str, float]]) -> Iterator[GaugeMetricFamily]:
        window = f"over the last {self.window_s:g} s"
        texts = {
            "delivered_fps": f"Answers per second of each stream {window}",
            "drop_rate": f"Drop notices / frames settled of each stream {window}",
            "late_rate": f"Answers over their budget / answers of each stream {window}",
        }
        for key, text in texts.items():
            family = GaugeMetricFamily(f"understudy_stream_{key}", text, labels=["stream"])
            for label, values in snap.items():
                family.add_metric([label], values[key])
            yield family
