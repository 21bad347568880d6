"""The boxes + scores pair: two outputs, boxes (B, N, 4) and scores (B, N, C).

This family's ``decoded_xyxy`` exports (kind ``understudy``: xyxy input pixels, sigmoid
probabilities, classes in the metadata) and any other detector with two such outputs
(kind ``pair``: box format, units and score activation from the layout)."""

from __future__ import annotations

import numpy as np

from distill.teachers.layout import OutputLayout, activate, to_xyxy_pixels


def decode(
    outputs: dict[str, np.ndarray], layout: OutputLayout, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """-> boxes (B, N, 4) xyxy input pixels, scores (B, N, C) probabilities."""
    boxes, scores = outputs[layout.boxes], outputs[layout.scores]
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or scores.shape[:2] != boxes.shape[:2]:
        raise ValueError(
            f"teacher outputs {layout.boxes}{list(boxes.shape)} / {layout.scores}"
            f"{list(scores.shape)} are not (B, N, 4) / (B, N, C)"
        )
    return to_xyxy_pixels(boxes, layout, hw), activate(scores, layout)
