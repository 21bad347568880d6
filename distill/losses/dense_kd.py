"""Dense targets from any teacher's detections (the ``dense`` KD term).

A teacher of any family gives boxes and class scores, not anchors that line up with the
student's. Its detections after NMS are assigned to the student's anchors exactly as
ground truth is (the task-aligned assigner, :mod:`distill.losses.assigner`); each
assigned anchor's classification target is the teacher's class probabilities for that
detection times the anchor's alignment quality (the assigner's normalized score, so the
best-aligned anchor of a detection gets its best IoU), and every other anchor's target
is 0 (the teacher saw nothing there). The localization branch learns the teacher's
boxes (GIoU and DFL, weighted by the target). It is the detection loss of
:mod:`distill.losses.detection` with the teacher's soft targets, so it applies on
labelled and unlabelled images alike.
"""

from __future__ import annotations

import numpy as np
import torch

from distill.losses.assigner import task_aligned_assign
from distill.losses.detection import LossWeights, detection_loss, split_targets
from distill.models.head import HeadOutput, dfl_expectation, distances_to_boxes, make_anchors


@torch.no_grad()
def teacher_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's detections after class-aware NMS (the runtime's).

    boxes: (B, N, 4) xyxy network pixels; scores: (B, N, C) probabilities. Returns dets
    (M, 6) [batch_idx, cls, x1, y1, x2, y2] and their class probabilities (M, C), on the
    input's device; a detection's best class score exceeds ``score_threshold``.
    """
    from runtime.postprocess import batched_nms

    b_np = boxes.float().cpu().numpy()
    s_np = scores.float().cpu().numpy()
    rows, probs = [], []
    for i in range(len(b_np)):
        best = s_np[i].max(-1)
        cand = np.flatnonzero(best > score_threshold)
        if cand.size == 0:
            continue
        bx = b_np[i, cand]
        ok = (bx[:, 2] > bx[:, 0]) & (bx[:, 3] > bx[:, 1])
        cand, bx = cand[ok], bx[ok]
        cls = s_np[i, cand].argmax(-1)
        keep = batched_nms(bx, best[cand], cls, iou_threshold, max_detections)
        idx = np.full((len(keep), 1), i, np.float32)
        rows.append(np.concatenate([idx, cls[keep, None].astype(np.float32), bx[keep]], 1))
        probs.append(s_np[i, cand[keep]])
    c = scores.shape[-1]
    if not rows:
        return boxes.new_zeros(0, 6), boxes.new_zeros(0, c)
    dets = torch.from_numpy(np.concatenate(rows)).to(boxes.device)
    return dets, torch.from_numpy(np.concatenate(probs)).to(boxes.device)


def dense_kd(
    out: HeadOutput,
    strides: tuple[int, ...],
    dets: torch.Tensor,
    det_scores: torch.Tensor,
    taught: torch.Tensor | None = None,
    weights: LossWeights | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The student's detection loss against the teacher's dense soft targets, per image.

    out: the student's head outputs (cls (B, A, C) logits, dist (B, A, 4, R));
    dets: (M, 6) [batch_idx, cls, x1, y1, x2, y2] network pixels (:func:`teacher_detections`);
    det_scores: (M, C) the teacher's class probabilities of each detection;
    taught: (C,) bool, the classes the teacher knows (the others take no part; default all).
    Returns (0-dim loss per image, {"cls", "box", "dfl"} unweighted parts).
    """
    b, a, c = out.cls.shape
    points, stride_col = make_anchors(out.shapes, strides, out.cls.device)
    pred_boxes = distances_to_boxes(dfl_expectation(out.dist.detach().float()), points, stride_col)
    labels, boxes, valid = split_targets(dets, b)
    assignment = task_aligned_assign(
        out.cls.detach().float().sigmoid(), pred_boxes, points, labels, boxes, valid
    )
    soft = torch.zeros(b, a, c, device=out.cls.device)
    if len(dets):
        order = torch.arange(len(dets), device=dets.device, dtype=dets.dtype)
        rows = torch.cat([dets[:, :1], order[:, None], dets[:, 2:6]], 1)
        row_of, _, _ = split_targets(rows, b)  # (B, Mmax): each padded slot's row in dets
        row = row_of.gather(1, assignment.gt_index).clamp(min=0)  # (B, A)
        quality = assignment.scores.amax(-1) * assignment.fg  # (B, A)
        soft = det_scores.float()[row] * quality[..., None]
    if taught is not None and not bool(taught.all()):
        keep = taught.nonzero().squeeze(1)
        out = out._replace(cls=out.cls[..., keep])
        soft = soft[..., keep]
    weights = weights or LossWeights()
    total, logs, _ = detection_loss(out, dets, strides, weights, assignment._replace(scores=soft))
    return total / b, logs
