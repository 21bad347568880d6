"""CSP backbone: a stride-2 stem and four stride-2 stages; returns strides 8, 16, 32."""

from __future__ import annotations

import torch
from torch import nn

from distill.models.blocks import SPPF, ConvBNAct, CSPBlock


class Backbone(nn.Module):
    """(B, 3, H, W) -> (c3 (B, w[2], H/8, W/8), c4 (B, w[3], H/16, W/16), c5 (B, w[4], H/32, W/32)).

    ``widths`` are the channels after the stem and each of the four stages;
    ``depths`` the bottleneck counts of the four stages' CSP blocks.
    """

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...]) -> None:
        super().__init__()
        w, d = widths, depths
        self.stem = ConvBNAct(3, w[0], 3, 2)
        self.stage1 = nn.Sequential(ConvBNAct(w[0], w[1], 3, 2), CSPBlock(w[1], w[1], d[0]))
        self.stage2 = nn.Sequential(ConvBNAct(w[1], w[2], 3, 2), CSPBlock(w[2], w[2], d[1]))
        self.stage3 = nn.Sequential(ConvBNAct(w[2], w[3], 3, 2), CSPBlock(w[3], w[3], d[2]))
        self.stage4 = nn.Sequential(
            ConvBNAct(w[3], w[4], 3, 2), CSPBlock(w[4], w[4], d[3]), SPPF(w[4], w[4])
        )
        self.out_channels = (w[2], w[3], w[4])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stage1(self.stem(x))
        c3 = self.stage2(x)
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        return c3, c4, c5
