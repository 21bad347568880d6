"""Overlap of aligned boxes in torch: IoU (the assigner's alignment metric) and GIoU (the
box loss), sharing one intersection/union. Boxes (..., 4) xyxy in the same pixels."""

from __future__ import annotations

import torch


def _intersection_union(
    a: torch.Tensor, b: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(intersection, union + eps) of aligned boxes a (..., 4), b (..., 4) -> (...), (...)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter, area_a + area_b - inter + eps


def box_iou_pairwise(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU of aligned boxes: a (..., 4), b (..., 4) xyxy -> (...) (broadcasting)."""
    inter, union = _intersection_union(a, b, eps)
    return inter / union


def giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Generalized IoU of aligned boxes (..., 4) xyxy -> (...): IoU minus the share of the
    smallest enclosing box that the union leaves empty."""
    inter, union = _intersection_union(a, b, eps)
    hull = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).prod(-1)
    return inter / union - (hull - union) / (hull + eps)
