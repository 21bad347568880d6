"""The shadow teacher: the student's agreement with a teacher, measured in the field.

``understudy serve --shadow-teacher teacher.onnx --shadow-every N`` wraps the served
student in a :class:`ShadowTap`: after every model call, every N-th answered frame (the
decoded image and the student's detections) is offered to a :class:`ShadowTeacher`
through a bounded queue (1 frame by default) with ``put_nowait``; when the teacher is
still busy the frame is skipped and counted, so the student's answers never wait. The
teacher runs on a daemon thread at nice 19 (Linux) with one intra-op thread.

Agreement is detection matching with the teacher as the reference: per class, student
boxes are taken in descending score and each one matches the unmatched teacher box of
the same class with the highest IoU, if that IoU is >= 0.5 (true positive); unmatched
student boxes are false positives, unmatched teacher boxes false negatives. Precision =
tp / (tp + fp), recall = tp / (tp + fn), accumulated since start. Frames whose F1
(2 tp / (2 tp + fp + fn); 1 when both sides are empty) is below a threshold are saved
for retraining (:mod:`runtime.shadow_saver`), with where and when the frame was seen: the
servicer tags each decoded image (:meth:`ShadowTeacher.tag`: camera id, frame id, capture
and arrival time) and the tap looks the tag up by the image's identity when it offers it.

Limit: the teacher's pre/post-processing runs Python code and holds the GIL for short
stretches; inference itself (ONNX Runtime, TensorRT) releases it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.errors import ConfigError
from runtime.metrics import ShadowMetrics
from runtime.postprocess import box_iou
from runtime.proto import pb
from runtime.scheduler import DetectorLike
from runtime.server_config import ShadowConfig
from runtime.shadow_saver import DisagreementSaver, FrameTag
from runtime.types import Detections, StageTimings

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- agreement math
@dataclass(frozen=True)
class Agreement:
    """Match counts per class: ``tp``, ``fp``, ``fn`` are (C,) int64 arrays."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @staticmethod
    def zeros(num_classes: int) -> Agreement:
        return Agreement(*(np.zeros(num_classes, np.int64) for _ in range(3)))

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def precision(self) -> np.ndarray:
        """(C,) tp / (tp + fp); NaN where a class has no student box."""
        return _ratio(self.tp, self.tp + self.fp)

    def recall(self) -> np.ndarray:
        """(C,) tp / (tp + fn); NaN where a class has no teacher box."""
        return _ratio(self.tp, self.tp + self.fn)

    def overall(self) -> tuple[float, float]:
        """(precision, recall) over all classes (micro average); NaN where undefined."""
        tp, fp, fn = int(self.tp.sum()), int(self.fp.sum()), int(self.fn.sum())
        return (
            tp / (tp + fp) if tp + fp else float("nan"),
            tp / (tp + fn) if tp + fn else float("nan"),
        )

    def f1(self) -> float:
        """2 tp / (2 tp + fp + fn) over all classes; 1.0 when neither side has a box."""
        tp, wrong = int(self.tp.sum()), int(self.fp.sum() + self.fn.sum())
        return 1.0 if tp + wrong == 0 else 2 * tp / (2 * tp + wrong)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def match_detections(
    student: Detections,
    teacher: Detections,
    num_classes: int,
    *,
    iou_threshold: float = 0.5,
    teacher_min_score: float = 0.0,
) -> Agreement:
    """Count the student's detections against the teacher's on one image (see the module
    docstring). Boxes of both: (N, 4) xyxy in the same pixels. Teacher detections scoring
    below ``teacher_min_score`` are not part of the reference. Class ids must be in
    ``0..num_classes-1``."""
    keep = teacher.scores >= teacher_min_score
    t_boxes, t_cls = teacher.boxes[keep], teacher.class_ids[keep]
    for name, ids in (("student", student.class_ids), ("teacher", t_cls)):
        if len(ids) and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"{name} class ids must be in 0..{num_classes - 1}")
    tp = np.zeros(num_classes, np.int64)
    for c in np.unique(student.class_ids):
        s_idx = np.flatnonzero(student.class_ids == c)
        t_idx = np.flatnonzero(t_cls == c)
        if not len(t_idx):
            continue
        s_idx = s_idx[np.argsort(-student.scores[s_idx], kind="stable")]
        iou = box_iou(student.boxes[s_idx], t_boxes[t_idx])
        free = np.ones(len(t_idx), bool)
        for row in iou:
            candidates = np.where(free & (row >= iou_threshold), row, -1.0)
            best = int(np.argmax(candidates))
            if candidates[best] >= 0:
                free[best] = False
                tp[c] += 1
    n_student = np.bincount(student.class_ids, minlength=num_classes).astype(np.int64)
    n_teacher = np.bincount(t_cls, minlength=num_classes).astype(np.int64)
    return Agreement(tp, n_student - tp, n_teacher - tp)


# ---------------------------------------------------------------------- the worker
def lower_thread_priority() -> None:
    """Nice 19 for the calling thread (Linux: a thread is a task); ignored elsewhere."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class ShadowTeacher:
    """Runs ``teacher`` (a Detector-like object, or a factory called on the worker
    thread) on the frames given to :meth:`offer`; see the module docstring."""

    def __init__(
        self,
        teacher: DetectorLike | Callable[[], DetectorLike],
        config: ShadowConfig,
        class_names: Sequence[str],
        metrics: ShadowMetrics | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.class_names = tuple(class_names)
        self.name = config.teacher
        self.metrics = metrics
        self.saver = (
            DisagreementSaver(config.save_dir, config.save_max_mb, self.class_names)
            if config.save_dir
            else None
        )
        self._source = teacher
        self._queue: queue.Queue[tuple[np.ndarray, Detections, FrameTag | None]] = queue.Queue(
            config.queue_size
        )
        self._tags: dict[int, FrameTag] = {}  # id(image) -> tag, while the image lives
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._total = Agreement.zeros(len(self.class_names))
        self._latencies: deque[float] = deque(maxlen=config.latency_window)
        self.offered = self.compared = self.skipped = self.saved = self.failed = 0
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="understudy-shadow", daemon=True)

    def start(self, timeout: float | None = None) -> None:
        """Start the worker and wait until the teacher is loaded and warm; re-raises a
        loading error (or a class list that differs from the student's)."""
        self._thread.start()
        if not self._loaded.wait(timeout):
            raise ConfigError(f"shadow teacher {self.name}: not loaded within {timeout} s")
        if self._error is not None:
            raise self._error

    def tag(self, image: np.ndarray, tag: FrameTag) -> None:
        """Remember where and when ``image`` (a decoded frame about to be scheduled) was
        seen, until the image is freed; only kept when frames are saved. O(1)."""
        if self.saver is None:
            return
        key = id(image)
        self._tags[key] = tag
        weakref.finalize(image, self._tags.pop, key, None)

    def offer(self, image: np.ndarray, detections: Detections) -> bool:
        """Hot path (the model worker): O(1), never blocks. True if the frame was queued."""
        if next(self._counter) % self.config.every:
            return False
        try:
            self._queue.put_nowait((image, detections, self._tags.get(id(image))))
        except queue.Full:
            self.skipped += 1
            if self.metrics is not None:
                self.metrics.skipped.labels(reason="busy").inc()
            return False
        self.offered += 1
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the frame in progress (the thread is a daemon: it never holds up exit)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        lower_thread_priority()
        owned = not hasattr(self._source, "detect")
        teacher: Any = None
        try:
            teacher = self._source() if owned else self._source  # type: ignore[operator]
            names = tuple(teacher.spec.class_names)
            if names != self.class_names:
                raise ConfigError(
                    f"shadow teacher {self.name}: classes {list(names)} differ from the "
                    f"student's {list(self.class_names)}; agreement needs the same class list"
                )
            teacher.warmup(1)
        except BaseException as e:
            self._error = e
            self._loaded.set()
            if owned and teacher is not None:
                teacher.close()
            return
        self._loaded.set()
        try:
            while not self._stop.is_set():
                try:
                    image, student, tag = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                self._compare(teacher, image, student, tag)
        finally:
            if owned:
                teacher.close()

    def _compare(
        self, teacher: Any, image: np.ndarray, student: Detections, tag: FrameTag | None = None
    ) -> None:
        start = time.perf_counter()
        try:
            result: tuple[Detections, StageTimings] = teacher.detect(image)
        except Exception as e:
            self.failed += 1
            if self.metrics is not None:
                self.metrics.skipped.labels(reason="teacher_error").inc()
            if self.failed == 1 or self.failed % 100 == 0:
                log.warning("shadow teacher failed on a frame (%d so far): %s", self.failed, e)
            return
        teacher_ms = (time.perf_counter() - start) * 1000.0
        reference = result[0]
        counts = match_detections(
            student,
            reference,
            len(self.class_names),
            iou_threshold=self.config.iou_threshold,
            teacher_min_score=self.config.teacher_min_score,
        )
        with self._lock:
            self._total = self._total + counts
            self._latencies.append(teacher_ms)
            total = self._total
        if self.metrics is not None:
            self.metrics.observe(
                (counts.tp, counts.fp, counts.fn), (total.tp, total.fp, total.fn), teacher_ms
            )
        f1 = counts.f1()
        if self.saver is not None and f1 < self.config.save_below_f1:
            self._save(image, student, reference, counts, f1, teacher_ms, tag)
        with self._lock:  # counted once everything about the frame is recorded (and saved)
            self.compared += 1

    def _save(
        self,
        image: np.ndarray,
        student: Detections,
        teacher: Detections,
        counts: Agreement,
        f1: float,
        teacher_ms: float,
        tag: FrameTag | None = None,
    ) -> None:
        info = {
            "f1": round(f1, 4),
            "iou_threshold": self.config.iou_threshold,
            "teacher_model": self.name,
            "teacher_ms": round(teacher_ms, 2),
            "true_positives": int(counts.tp.sum()),
            "false_positives": int(counts.fp.sum()),
            "false_negatives": int(counts.fn.sum()),
        }
        try:
            saved = self.saver.save(image, student, teacher, info, tag)  # type: ignore[union-attr]
        except (OSError, ValueError) as e:
            log.warning("shadow: could not save a disagreeing frame: %s", e)
            return
        if saved is not None:
            self.saved += 1
            if self.metrics is not None:
                self.metrics.saved.inc()

    def report(self) -> pb.ShadowReport:
        """The cumulative agreement, for ``GetModelInfo``."""
        with self._lock:
            total, latencies = self._total, list(self._latencies)
            compared = self.compared
        out = pb.ShadowReport(
            teacher=self.name,
            every=self.config.every,
            iou_threshold=self.config.iou_threshold,
            frames_compared=compared,
            frames_skipped=self.skipped + self.failed,
            frames_saved=self.saved,
        )
        if latencies:
            out.teacher_latency_p50_ms = float(np.median(latencies))
        precision, recall = total.overall()
        if not np.isnan(precision):
            out.precision = precision
        if not np.isnan(recall):
            out.recall = recall
        per_p, per_r = total.precision(), total.recall()
        for c, label in enumerate(self.class_names):
            row = out.classes.add(
                class_id=c,
                label=label,
                true_positives=int(total.tp[c]),
                false_positives=int(total.fp[c]),
                false_negatives=int(total.fn[c]),
            )
            if not np.isnan(per_p[c]):
                row.precision = float(per_p[c])
            if not np.isnan(per_r[c]):
                row.recall = float(per_r[c])
        return out


class ShadowTap:
    """The student detector as the scheduler sees it: every call is forwarded, then each
    answered frame is offered to ``shadow`` (O(1), see :meth:`ShadowTeacher.offer`)."""

    def __init__(self, detector: DetectorLike, shadow: ShadowTeacher) -> None:
        self.detector = detector
        self.shadow = shadow
        self.spec = detector.spec
        self.backend_name = detector.backend_name
        self.precision = detector.precision
        self.max_batch = detector.max_batch

    def detect(self, image: np.ndarray) -> tuple[Detections, StageTimings]:
        result = self.detector.detect(image)
        self.shadow.offer(image, result[0])
        return result

    def detect_batch(self, images: list[np.ndarray]) -> list[tuple[Detections, StageTimings]]:
        results = self.detector.detect_batch(images)
        for image, (dets, _) in zip(images, results):
            self.shadow.offer(image, dets)
        return results

    def warmup(self, n: int = 3) -> None:
        self.detector.warmup(n)

    def close(self) -> None:
        self.detector.close()
