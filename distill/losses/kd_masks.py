"""Foreground masks on the FPN grids, for the masked feature-distillation losses.

Levels are given as an ordered mapping name -> (H_l, W_l) ("p3", "p4", "p5" for strides
8/16/32). Anchors A are the cells of the levels, level by level, row-major within a level
(the layout in ``runtime/model_spec.py``). Masks are (B, 1, H_l, W_l) float32 in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def boxes_to_level_masks(
    boxes_per_image: Sequence[Tensor],
    image_size: tuple[int, int],
    level_shapes: Mapping[str, tuple[int, int]],
    expand: float = 1.0,
    area_normalized: bool = False,
) -> dict[str, Tensor]:
    """Rasterize ground-truth boxes onto each level's grid as foreground masks.

    A cell of a level (stride ``image_size / (H_l, W_l)``) is foreground when its square
    overlaps a box with positive area, so every non-empty box inside the image marks at
    least one cell per level. ``expand`` scales each box about its centre first (e.g.
    1.2 to take some context). With ``area_normalized`` a box's cells get 1/(number of
    cells it covers) instead of 1, so large and small objects weigh the same in
    :func:`feature_kd` (FGD's scaling); overlapping boxes keep the larger value.

    Args:
        boxes_per_image: B tensors (N_i, 4) xyxy in network-input pixels (N_i may be 0).
        image_size: (H, W) of the network input.
        level_shapes: level name -> (H_l, W_l).
    Returns:
        level name -> (B, 1, H_l, W_l) float32 mask in [0, 1].
    """
    img_h, img_w = float(image_size[0]), float(image_size[1])
    n_img = len(boxes_per_image)
    device = boxes_per_image[0].device if n_img else torch.device("cpu")
    for i, b in enumerate(boxes_per_image):
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(
                f"boxes_to_level_masks: image {i} boxes are {tuple(b.shape)}, want (N, 4) xyxy"
            )
    boxes = torch.cat(
        [b.detach().float().to(device) for b in boxes_per_image]
        or [torch.zeros(0, 4, device=device)]
    )
    batch_idx = torch.cat(
        [
            torch.full((len(b),), i, dtype=torch.long, device=device)
            for i, b in enumerate(boxes_per_image)
        ]
        or [torch.zeros(0, dtype=torch.long, device=device)]
    )
    if expand != 1.0:
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = (boxes[:, 2:] - boxes[:, :2]) / 2 * float(expand)
        boxes = torch.cat([centre - half, centre + half], dim=1)
    masks: dict[str, Tensor] = {}
    for name, (h, w) in level_shapes.items():
        sx, sy = img_w / w, img_h / h
        x_lo = torch.arange(w, device=device, dtype=torch.float32) * sx
        y_lo = torch.arange(h, device=device, dtype=torch.float32) * sy
        cover_x = (x_lo[None] < boxes[:, 2:3]) & (x_lo[None] + sx > boxes[:, 0:1])  # (N, w)
        cover_y = (y_lo[None] < boxes[:, 3:4]) & (y_lo[None] + sy > boxes[:, 1:2])  # (N, h)
        per_box = (cover_y[:, :, None] & cover_x[:, None, :]).flatten(1).float()  # (N, h*w)
        if area_normalized:
            per_box = per_box / per_box.sum(1, keepdim=True).clamp_min(1.0)
        out = torch.zeros(n_img, h * w, device=device)
        index = batch_idx[:, None].expand_as(per_box)
        out.scatter_reduce_(0, index, per_box, reduce="amax", include_self=True)
        masks[name] = out.view(n_img, 1, h, w)
    return masks


def scores_to_level_masks(
    teacher_scores: Tensor,
    level_shapes: Mapping[str, tuple[int, int]],
    threshold: float = 0.5,
) -> dict[str, Tensor]:
    """Foreground masks from the teacher's confidence: max class score >= ``threshold``.

    Args:
        teacher_scores: (B, A, C) sigmoid probabilities (not logits), anchors level by
            level in the order of ``level_shapes``, row-major within a level.
        level_shapes: level name -> (H_l, W_l); Σ H_l·W_l must equal A.
        threshold: score at or above which a cell is foreground.
    Returns:
        level name -> (B, 1, H_l, W_l) float32 mask of 0/1.
    """
    if teacher_scores.dim() != 3:
        raise ValueError(f"scores_to_level_masks: want (B, A, C), got {teacher_scores.shape}")
    sizes = [int(h) * int(w) for h, w in level_shapes.values()]
    n_img, n_anchor = teacher_scores.shape[:2]
    if sum(sizes) != n_anchor:
        raise ValueError(
            f"scores_to_level_masks: levels {dict(level_shapes)} hold "
            f"{sum(sizes)} anchors but the scores have {n_anchor}"
        )
    fg = (teacher_scores.detach().float().amax(-1) >= threshold).float()  # (B, A)
    parts = fg.split(sizes, dim=1)
    return {
        name: part.reshape(n_img, 1, h, w)
        for (name, (h, w)), part in zip(level_shapes.items(), parts)
    }
