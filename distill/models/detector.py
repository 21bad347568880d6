"""The detector: ``Detector(backbone, neck, head)``, and the deploy-time decoding wrapper."""

from __future__ import annotations

import torch
from torch import nn

from distill.models.backbone import Backbone
from distill.models.head import (
    DecoupledHead,
    HeadOutput,
    dfl_expectation,
    distances_to_boxes,
    make_anchors,
)
from distill.models.neck import PANNeck


class Detector(nn.Module):
    """Anchor-free single-stage detector: CSP backbone -> PAN neck -> decoupled DFL head.

    ``forward(x)`` with x (B, 3, H, W) float RGB in [0, 1] (H, W multiples of 32) returns a
    :class:`HeadOutput`; with ``return_features=True`` it returns ``(HeadOutput, feats)``
    where ``feats`` maps "p3"/"p4"/"p5" to the neck outputs (strides 8/16/32).
    """

    def __init__(self, backbone: Backbone, neck: PANNeck, head: DecoupledHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def strides(self) -> tuple[int, ...]:
        return self.head.strides

    @property
    def reg_max(self) -> int:
        return self.head.reg_max

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> HeadOutput | tuple[HeadOutput, dict[str, torch.Tensor]]:
        feats = self.neck(self.backbone(x))
        out = self.head(list(feats.values()))
        return (out, feats) if return_features else out

    def decode(self, out: HeadOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """HeadOutput -> boxes (B, A, 4) xyxy network-input pixels, scores (B, A, C) in [0, 1]."""
        points, strides = make_anchors(out.shapes, self.strides, out.cls.device, out.dist.dtype)
        boxes = distances_to_boxes(dfl_expectation(out.dist), points, strides)
        return boxes, out.cls.sigmoid()


class DecodedDetector(nn.Module):
    """Deploy wrapper: (B, 3, H, W) -> (boxes (B, A, 4), scores (B, A, C)), the
    ``decoded_xyxy`` layout of :mod:`runtime.model_spec`. The DFL expectation is a softmax
    followed by a fixed 1x1 projection, so the graph stays TensorRT-friendly."""

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.decode(self.model(x))


class RawDetector(nn.Module):
    """Deploy wrapper for the ``raw_dfl`` layout: (box_dist (B, A, 4R), cls_logits (B, A, C))."""

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        return out.dist.flatten(2), out.cls
