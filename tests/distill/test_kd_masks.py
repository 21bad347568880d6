"""Foreground masks on the FPN grids (distill/losses/kd_masks.py)."""

from __future__ import annotations

import pytest
import torch

from distill.losses.kd_masks import boxes_to_level_masks, scores_to_level_masks

B, C = 2, 5
IMAGE = (64, 96)  # (H, W) of the network input
LEVELS = {"p3": (8, 12), "p4": (4, 6), "p5": (2, 3)}  # strides 8/16/32
A = sum(h * w for h, w in LEVELS.values())


def test_boxes_to_level_masks_marks_covered_cells() -> None:
    boxes = [torch.tensor([[0.0, 0.0, 16.0, 16.0]]), torch.tensor([[40.0, 20.0, 50.0, 30.0]])]
    m = boxes_to_level_masks(boxes, IMAGE, LEVELS)
    assert {n: tuple(v.shape) for n, v in m.items()} == {
        n: (B, 1, h, w) for n, (h, w) in LEVELS.items()
    }
    # image 0: stride 8 -> cells x, y in {0, 1}; strides 16 and 32 -> cell (0, 0) only.
    assert m["p3"][0, 0].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert m["p4"][0, 0].nonzero().tolist() == [[0, 0]]
    assert m["p5"][0, 0].nonzero().tolist() == [[0, 0]]
    # image 1: x 40..50 -> p3 columns 5, 6; y 20..30 -> p3 rows 2, 3.
    assert m["p3"][1, 0].nonzero().tolist() == [[2, 5], [2, 6], [3, 5], [3, 6]]
    assert m["p5"][1, 0].nonzero().tolist() == [[0, 1]]
    big = boxes_to_level_masks(boxes, IMAGE, LEVELS, expand=2.0)
    assert big["p3"][1, 0].sum() > m["p3"][1, 0].sum()
    norm = boxes_to_level_masks(boxes, IMAGE, LEVELS, area_normalized=True)
    assert norm["p3"][0, 0].sum().item() == pytest.approx(1.0)
    empty = boxes_to_level_masks([torch.zeros(0, 4)] * B, IMAGE, LEVELS)
    assert all(v.sum() == 0 for v in empty.values())


def test_scores_to_level_masks_follow_anchor_order() -> None:
    scores = torch.full((B, A, C), 0.1)
    p4_start = LEVELS["p3"][0] * LEVELS["p3"][1]
    scores[0, p4_start + 2 * LEVELS["p4"][1] + 3, 1] = 0.9  # p4 cell (y=2, x=3)
    scores[1, 5, 0] = 0.6  # p3 cell (0, 5)
    m = scores_to_level_masks(scores, LEVELS, threshold=0.5)
    assert m["p4"][0, 0].nonzero().tolist() == [[2, 3]]
    assert m["p3"][1, 0].nonzero().tolist() == [[0, 5]]
    assert sum(v.sum().item() for v in m.values()) == 2
    with pytest.raises(ValueError, match="anchors"):
        scores_to_level_masks(scores[:, :-1], LEVELS)
