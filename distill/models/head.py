"""Decoupled anchor-free head with DFL box distributions, and the box decoding it implies.

Anchors are the cell centres of each level's grid, level by level (stride 8 first) and
row-major within a level: point ``((x + 0.5) * s, (y + 0.5) * s)`` in network-input pixels.
A box is four distances (left, top, right, bottom) from its anchor point in units of the
stride, each predicted as a distribution over ``reg_max`` bins {0, ..., reg_max - 1}.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from distill.models.blocks import ConvBNAct


class HeadOutput(NamedTuple):
    """Raw head outputs, concatenated over levels.

    cls: (B, A, C) pre-sigmoid class logits.
    dist: (B, A, 4, R) logits of the DFL bins for left, top, right, bottom.
    shapes: ((H3, W3), (H4, W4), (H5, W5)) grid size of each level.
    """

    cls: torch.Tensor
    dist: torch.Tensor
    shapes: tuple[tuple[int, int], ...]


class DecoupledHead(nn.Module):
    """Per level: a box branch (2 x 3x3 conv -> 1x1 conv to 4*R) and a class branch
    (2 x 3x3 conv -> 1x1 conv to C). Weights are not shared across levels."""

    def __init__(
        self,
        in_channels: tuple[int, ...],
        num_classes: int,
        reg_max: int = 16,
        strides: tuple[int, ...] = (8, 16, 32),
        box_width: int | None = None,
        cls_width: int | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = strides
        cb = box_width or max(16, in_channels[0] // 4, reg_max * 4)
        cc = cls_width or max(in_channels[0], min(num_classes, 100))
        self.box = nn.ModuleList(
            nn.Sequential(ConvBNAct(c, cb, 3), ConvBNAct(cb, cb, 3), nn.Conv2d(cb, 4 * reg_max, 1))
            for c in in_channels
        )
        self.cls = nn.ModuleList(
            nn.Sequential(ConvBNAct(c, cc, 3), ConvBNAct(cc, cc, 3), nn.Conv2d(cc, num_classes, 1))
            for c in in_channels
        )
        self.reset_bias()

    def reset_bias(self, input_size: int = 320, objects_per_image: float = 5.0) -> None:
        """Start the class logits at the prior probability of an object per cell
        (about ``objects_per_image`` objects spread over C classes and the level's cells),
        which keeps early focal-style losses from being swamped by background."""
        for branch, stride in zip(self.cls, self.strides):
            cells = (input_size / stride) ** 2
            prior = objects_per_image / self.num_classes / cells
            nn.init.constant_(branch[-1].bias, math.log(prior / (1 - prior)))
        for branch in self.box:
            nn.init.constant_(branch[-1].bias, 1.0)

    def forward(self, feats: list[torch.Tensor]) -> HeadOutput:
        cls_out, dist_out, shapes = [], [], []
        for f, box_branch, cls_branch in zip(feats, self.box, self.cls):
            h, w = f.shape[2:]
            shapes.append((h, w))
            cls_out.append(cls_branch(f).flatten(2))  # (B, C, HW)
            dist_out.append(box_branch(f).flatten(2))  # (B, 4R, HW)
        cls = torch.cat(cls_out, 2).transpose(1, 2)  # (B, A, C)
        dist = torch.cat(dist_out, 2).transpose(1, 2)  # (B, A, 4R)
        dist = dist.reshape(dist.shape[0], dist.shape[1], 4, self.reg_max)
        return HeadOutput(cls, dist, tuple(shapes))


def make_anchors(
    shapes: tuple[tuple[int, int], ...], strides: tuple[int, ...], device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points (A, 2) as (x, y) network-input pixels and their strides (A, 1)."""
    points, stride_col = [], []
    for (h, w), s in zip(shapes, strides):
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx, yy], -1).reshape(-1, 2))
        stride_col.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_col)


def dfl_expectation(dist: torch.Tensor) -> torch.Tensor:
    """(..., 4, R) bin logits -> (..., 4) expected distance in stride units."""
    bins = torch.arange(dist.shape[-1], device=dist.device, dtype=dist.dtype)
    return (dist.softmax(-1) * bins).sum(-1)


def distances_to_boxes(
    ltrb: torch.Tensor, points: torch.Tensor, strides: torch.Tensor
) -> torch.Tensor:
    """(B, A, 4) ltrb in stride units + anchors -> (B, A, 4) xyxy network-input pixels."""
    ltrb = ltrb * strides
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)


def boxes_to_distances(
    boxes: torch.Tensor, points: torch.Tensor, strides: torch.Tensor, reg_max: int
) -> torch.Tensor:
    """Inverse of :func:`distances_to_boxes`, clamped to the representable range [0, R-1-0.01]."""
    ltrb = torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], -1) / strides
    return ltrb.clamp(0, reg_max - 1 - 0.01)
