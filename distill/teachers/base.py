"""What every teacher gives: its outputs on a training batch (:class:`TeacherOutput`),
what it can teach a student (:class:`Teaches`), and detections on source images
(:func:`detect_images`, behind each teacher's ``detect``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from runtime.model_spec import ModelSpec
from runtime.types import Detections


class TeacherOutput(NamedTuple):
    """Teacher predictions on a batch of student network inputs (B, 3, S, S).

    boxes: (B, A_t, 4) xyxy in the student's network-input pixels (an external teacher's
    boxes are mapped back from its own letterboxed input); scores: (B, A_t, C)
    probabilities over the student's classes (a class the teacher lacks scores 0);
    cls_logits: (B, A, C) or None (only when the anchors line up with the student's);
    dist: (B, A, 4, R) or None (native teachers only); feats: {"p3", "p4", "p5"} neck
    features or None.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    cls_logits: torch.Tensor | None
    dist: torch.Tensor | None
    feats: dict[str, torch.Tensor] | None


class Teaches(NamedTuple):
    """Which signals a teacher can give a student of input ``S x S``.

    anchors: class logits anchor by anchor (logit KD); dist: DFL box distributions (LD);
    features: neck features (feature, CWD, attention). Dense targets and pseudo-labels
    need only boxes and scores, which every teacher gives.
    """

    anchors: bool
    dist: bool
    features: bool


RunFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def detect_images(
    run: RunFn,
    spec: ModelSpec,
    images: Sequence[np.ndarray],
    pixel_format: str,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
) -> list[Detections]:
    """Letterbox each image into ``spec.input_size`` (the runtime's preprocessing), run
    ``run`` on the batch ((B, 3, H, W) float32 -> boxes (B, N, 4) xyxy network pixels,
    scores (B, N, C) probabilities), then the runtime's NMS and un-letterboxing: one
    :class:`Detections` per image, boxes xyxy in that image's pixels."""
    from runtime.postprocess import Postprocessor
    from runtime.preprocess import Preprocessor

    if not images:
        return []
    pre = Preprocessor(spec, slots=len(images))
    boxes_spec = ModelSpec(class_names=spec.class_names, input_size=spec.input_size)
    post = Postprocessor(boxes_spec, score_threshold, iou_threshold, max_detections)
    letterboxes = [pre(img, i, pixel_format) for i, img in enumerate(images)]
    boxes, scores = run(pre.batch(len(images)))
    return post({"boxes": boxes, "scores": scores}, letterboxes)
