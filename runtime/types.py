"""Plain result types shared by the runtime, the service and the offline tools."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Detections for one image.

    boxes: (N, 4) float32, xyxy, original-image pixels (clipped to the image).
    scores: (N,) float32 in [0, 1].
    class_ids: (N,) int32 indices into the model's class names.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or self.class_ids.shape != (n,):
            raise ValueError(
                f"Detections: inconsistent shapes boxes={self.boxes.shape} "
                f"scores={self.scores.shape} class_ids={self.class_ids.shape}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32)
        )


@dataclass(frozen=True)
class StageTimings:
    """Milliseconds spent in each stage of one frame (0.0 where a stage did not run)."""

    queue_ms: float = 0.0
    decode_ms: float = 0.0
    preprocess_ms: float = 0.0
    infer_ms: float = 0.0
    postprocess_ms: float = 0.0
    total_ms: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
