"""Task-aligned assignment (TOOD): each ground-truth box claims the top-k anchors, among
those whose centre lies inside it, ranked by ``score^alpha * IoU^beta``; an anchor claimed
by several boxes goes to the one it overlaps most. Vectorized over batch, boxes, anchors."""

from __future__ import annotations

from typing import NamedTuple

import torch

from distill.losses.iou import box_iou_pairwise


class Assignment(NamedTuple):
    """fg: (B, A) bool; labels: (B, A) long; boxes: (B, A, 4) xyxy network pixels;
    scores: (B, A, C) soft targets (alignment normalized to the box's best IoU);
    gt_index: (B, A) long index of the assigned ground truth (valid where fg)."""

    fg: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    gt_index: torch.Tensor


@torch.no_grad()
def task_aligned_assign(
    pred_scores: torch.Tensor,
    pred_boxes: torch.Tensor,
    points: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_valid: torch.Tensor,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    eps: float = 1e-9,
) -> Assignment:
    """Assign anchors to ground truth.

    pred_scores: (B, A, C) sigmoid scores; pred_boxes: (B, A, 4) xyxy network pixels;
    points: (A, 2) anchor centres; gt_labels: (B, M) long; gt_boxes: (B, M, 4) xyxy;
    gt_valid: (B, M) bool marking real (non-padding) boxes.
    """
    b, a, c = pred_scores.shape
    m = gt_boxes.shape[1]
    device = pred_scores.device
    if m == 0:
        return Assignment(
            torch.zeros(b, a, dtype=torch.bool, device=device),
            torch.zeros(b, a, dtype=torch.long, device=device),
            torch.zeros(b, a, 4, device=device),
            torch.zeros(b, a, c, device=device),
            torch.zeros(b, a, dtype=torch.long, device=device),
        )
    pred_scores = pred_scores.float()
    pred_boxes = pred_boxes.float()
    # Anchor centre strictly inside the box: (B, M, A).
    x, y = points[:, 0], points[:, 1]
    g = gt_boxes[..., None, :]  # (B, M, 1, 4)
    inside = (
        (x > g[..., 0] + eps)
        & (y > g[..., 1] + eps)
        & (x < g[..., 2] - eps)
        & (y < g[..., 3] - eps)
    )
    candidate = inside & gt_valid[..., None]

    iou = box_iou_pairwise(gt_boxes[:, :, None, :], pred_boxes[:, None, :, :]).clamp(min=0)
    label_idx = gt_labels.clamp(min=0)[..., None].expand(b, m, a)
    cls_score = pred_scores.transpose(1, 2).gather(1, label_idx)  # (B, M, A)
    align = cls_score.pow(alpha) * iou.pow(beta) * candidate

    k = min(topk, a)
    top_idx = align.topk(k, dim=-1).indices  # (B, M, k)
    in_topk = torch.zeros_like(candidate).scatter_(-1, top_idx, True)
    pos = in_topk & candidate  # (B, M, A)

    # Resolve anchors claimed by several boxes: keep the box with the highest IoU.
    multi = pos.sum(1, keepdim=True) > 1
    if multi.any():
        best = iou.masked_fill(~candidate, -1).argmax(1, keepdim=True)  # (B, 1, A)
        best_mask = torch.zeros_like(pos).scatter_(1, best, True)
        pos = torch.where(multi, best_mask & candidate, pos)

    fg = pos.any(1)  # (B, A)
    gt_index = pos.float().argmax(1)  # (B, A)
    labels = gt_labels.gather(1, gt_index).clamp(min=0)
    boxes = gt_boxes.gather(1, gt_index[..., None].expand(b, a, 4))

    # Soft targets: alignment normalized so each box's best anchor gets its best IoU.
    align = align * pos
    max_align = align.amax(-1, keepdim=True)
    max_iou = (iou * pos).amax(-1, keepdim=True)
    norm = (align * max_iou / (max_align + eps)).amax(1)  # (B, A)
    scores = torch.zeros(b, a, c, device=device)
    scores.scatter_(-1, labels[..., None], 1.0)
    scores = scores * (norm * fg)[..., None]
    return Assignment(fg, labels, boxes, scores, gt_index)
