"""Detection losses for the DFL head: quality-focal (or BCE) classification against
task-aligned soft targets, GIoU (:mod:`distill.losses.iou`) and distribution focal loss
on assigned anchors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distill import ddp
from distill.losses.assigner import Assignment, task_aligned_assign
from distill.losses.iou import giou
from distill.models.head import HeadOutput, boxes_to_distances, make_anchors


@dataclass(frozen=True)
class LossWeights:
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    cls_loss: str = "qfl"  # "qfl" (quality focal, beta=2) or "bce"


def dfl_loss(dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss. dist: (N, 4, R) logits; target: (N, 4) distances in bins
    within [0, R-1). Cross-entropy to the two nearest bins, weighted by proximity -> (N,)."""
    left = target.long()
    right = left + 1
    w_left = right.float() - target
    w_right = 1.0 - w_left
    logp = F.log_softmax(dist, dim=-1)
    loss = -(
        logp.gather(-1, left[..., None]).squeeze(-1) * w_left
        + logp.gather(-1, right[..., None]).squeeze(-1) * w_right
    )
    return loss.mean(-1)


def classification_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Summed per-element loss between (B, A, C) logits and soft targets in [0, 1]."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if kind == "qfl":
        return (bce * (logits.sigmoid() - target).abs().pow(2.0)).sum()
    return bce.sum()


def split_targets(
    targets: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, 6) [batch_idx, cls, x1, y1, x2, y2] -> padded labels (B, Mmax), boxes (B, Mmax, 4),
    valid (B, Mmax) bool."""
    device = targets.device
    counts = torch.bincount(targets[:, 0].long(), minlength=batch_size) if len(targets) else None
    mmax = int(counts.max()) if counts is not None else 0
    labels = torch.full((batch_size, mmax), -1, dtype=torch.long, device=device)
    boxes = torch.zeros(batch_size, mmax, 4, device=device)
    valid = torch.zeros(batch_size, mmax, dtype=torch.bool, device=device)
    if mmax:
        bi = targets[:, 0].long()
        order = torch.argsort(bi, stable=True)
        bi = bi[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(bi), device=device) - starts[bi]
        labels[bi, slot] = targets[order, 1].long()
        boxes[bi, slot] = targets[order, 2:6].float()
        valid[bi, slot] = True
    return labels, boxes, valid


def detection_loss(
    out: HeadOutput,
    targets: torch.Tensor,
    strides: tuple[int, ...],
    weights: LossWeights = LossWeights(),
    assignment: Assignment | None = None,
) -> tuple[torch.Tensor, dict[str, float], Assignment]:
    """Total loss (scaled by batch size, as usual for summed detection losses), the logged
    terms, and the assignment (reused by distillation for foreground weights).

    out: head outputs for a batch of B images; targets: (M, 6) [batch_idx, cls, x1, y1,
    x2, y2] in network-input pixels.
    """
    cls_logits = out.cls.float()
    dist = out.dist.float()
    b = cls_logits.shape[0]
    reg_max = dist.shape[-1]
    points, stride_col = make_anchors(out.shapes, strides, cls_logits.device)
    bins = torch.arange(reg_max, device=dist.device, dtype=dist.dtype)
    ltrb = (dist.softmax(-1) * bins).sum(-1) * stride_col
    pred_boxes = torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)

    if assignment is None:
        labels, boxes, valid = split_targets(targets, b)
        assignment = task_aligned_assign(
            cls_logits.detach().sigmoid(), pred_boxes.detach(), points, labels, boxes, valid
        )
    fg = assignment.fg
    target_scores = assignment.scores
    norm = ddp.denominator(target_scores.sum(), 1.0)  # global under DDP

    loss_cls = classification_loss(cls_logits, target_scores, weights.cls_loss) / norm
    if fg.any():
        w = target_scores.sum(-1)[fg]
        loss_box = ((1.0 - giou(pred_boxes[fg], assignment.boxes[fg])) * w).sum() / norm
        tgt = boxes_to_distances(assignment.boxes, points, stride_col, reg_max)[fg]
        loss_dfl = (dfl_loss(dist[fg], tgt) * w).sum() / norm
    else:
        loss_box = loss_dfl = cls_logits.sum() * 0.0
    total = weights.box * loss_box + weights.cls * loss_cls + weights.dfl * loss_dfl
    logs = {"box": loss_box.item(), "cls": loss_cls.item(), "dfl": loss_dfl.item()}
    return total * b, logs, assignment
