"""The network itself behind the scheduler: what the ``<name>_raw`` model runs.

A ``_raw`` request carries the model's input tensor, already letterboxed and normalized
by the client ((B, 3, H, W) of the backend's input dtype), and gets the network's raw
output tensors back. It travels through the same :class:`runtime.scheduler.Scheduler` as
every frame (same lanes, budgets, dropping and single model worker), as a job whose
``image`` is a :class:`RawInput`. :class:`RawTap` is the detector the scheduler sees: it
runs a ``RawInput`` with ``backend.infer`` and hands every other image to the detector.
Its answer is a :class:`RawOutputs`, an empty :class:`Detections` that also holds the
output tensors, so code that expects detections still works.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.scheduler import DetectorLike
from runtime.types import Detections, StageTimings


@dataclass(frozen=True)
class RawInput:
    """A model input batch: (B, 3, H, W) of the backend's input dtype, already checked."""

    batch: np.ndarray


@dataclass(frozen=True)
class RawOutputs(Detections):
    """No detections; ``outputs``: the network's output tensors by name, leading dim B."""

    outputs: dict[str, np.ndarray] = field(default_factory=dict)


class RawTap:
    """``detector`` as the scheduler sees it, plus :class:`RawInput` jobs run on
    ``backend`` (the detector's opened backend; None: no raw jobs). Counts model calls
    for statistics: ``image_calls`` / ``raw_calls`` (``raw_items``: their batch
    elements) and the wall-clock time of the last of each (ms since the epoch); they are
    written by the scheduler's worker thread only."""

    def __init__(self, detector: DetectorLike, backend: Any) -> None:
        self.detector = detector
        self.backend = backend
        self.spec = detector.spec
        self.backend_name = detector.backend_name
        self.precision = detector.precision
        self.max_batch = detector.max_batch
        self.image_calls = 0
        self.raw_calls = 0
        self.raw_items = 0  # batch elements of the raw calls
        self.last_image_ms = 0
        self.last_raw_ms = 0

    def _run_raw(self, job: RawInput) -> tuple[Detections, StageTimings]:
        t0 = time.perf_counter()
        outputs = self.backend.infer(job.batch)
        ms = (time.perf_counter() - t0) * 1000.0
        self.raw_calls += 1
        self.raw_items += int(job.batch.shape[0])
        self.last_raw_ms = time.time_ns() // 1_000_000
        empty = Detections.empty()
        result = RawOutputs(empty.boxes, empty.scores, empty.class_ids, outputs=dict(outputs))
        return result, StageTimings(infer_ms=ms, total_ms=ms)

    def detect(self, image: Any) -> tuple[Detections, StageTimings]:
        if isinstance(image, RawInput):
            return self._run_raw(image)
        result = self.detector.detect(image)
        self.image_calls += 1
        self.last_image_ms = time.time_ns() // 1_000_000
        return result

    def detect_batch(self, images: list[Any]) -> list[tuple[Detections, StageTimings]]:
        """Frames as one detector batch; raw inputs one backend call each; input order."""
        frames = [i for i, image in enumerate(images) if not isinstance(image, RawInput)]
        results: list[Any] = [None] * len(images)
        if frames:
            answers = self.detector.detect_batch([images[i] for i in frames])
            self.image_calls += 1
            self.last_image_ms = time.time_ns() // 1_000_000
            for i, answer in zip(frames, answers):
                results[i] = answer
        for i, image in enumerate(images):
            if isinstance(image, RawInput):
                results[i] = self._run_raw(image)
        return results

    def warmup(self, n: int = 3) -> None:
        self.detector.warmup(n)

    def close(self) -> None:
        self.detector.close()
