"""Honest FLOP counts: torch's FlopCounterMode counts 2 FLOPs per multiply-accumulate of
convolutions and matrix products (so GFLOPs = 2 x GMACs). Element-wise ops (BN, SiLU,
add, pooling, resize) are not counted, as is usual for detector FLOP tables."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from distill.models.detector import Detector


def count_flops(model: Detector, size: int | tuple[int, int] = 320) -> int:
    """FLOPs (2 x MACs) of one forward pass at batch 1 and input size (H, W)."""
    h, w = (size, size) if isinstance(size, int) else size
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, h, w))
    model.train(was_training)
    return int(counter.get_total_flops())


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
