"""The DETR layout: a fixed set of Q queries, boxes (B, Q, 4) as normalized cx, cy, w, h
(fractions of the input's width and height) and class logits (B, Q, C).

RT-DETR style heads use per-class sigmoids (the default); DETR's own head uses a softmax
over C + 1 columns whose last is "no object" (``scores_activation: softmax``,
``background_last: true``). Every query is a candidate detection; there are no anchors, so
such a teacher teaches through dense targets and pseudo-labels."""

from __future__ import annotations

import numpy as np

from distill.teachers.layout import OutputLayout
from distill.teachers.pair import decode as decode_pair


def decode(
    outputs: dict[str, np.ndarray], layout: OutputLayout, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """-> boxes (B, Q, 4) xyxy input pixels, scores (B, Q, C) probabilities."""
    return decode_pair(outputs, layout, hw)
