"""PAN neck: top-down (upsample + concat) then bottom-up (stride-2 conv + concat)."""

from __future__ import annotations

import torch
from torch import nn

from distill.models.blocks import ConvBNAct, CSPBlock

FEATURE_NAMES = ("p3", "p4", "p5")


class PANNeck(nn.Module):
    """(c3, c4, c5) -> {"p3": (B, o3, H/8, W/8), "p4": (B, o4, H/16, W/16),
    "p5": (B, o5, H/32, W/32)}.

    These named outputs are the features used by feature and attention distillation.
    """

    def __init__(self, in_channels: tuple[int, int, int], n: int) -> None:
        super().__init__()
        c3, c4, c5 = in_channels
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.top4 = CSPBlock(c5 + c4, c4, n, shortcut=False)
        self.top3 = CSPBlock(c4 + c3, c3, n, shortcut=False)
        self.down3 = ConvBNAct(c3, c3, 3, 2)
        self.bottom4 = CSPBlock(c3 + c4, c4, n, shortcut=False)
        self.down4 = ConvBNAct(c4, c4, 3, 2)
        self.bottom5 = CSPBlock(c4 + c5, c5, n, shortcut=False)
        self.out_channels = {"p3": c3, "p4": c4, "p5": c5}

    def forward(
        self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        c3, c4, c5 = feats
        t4 = self.top4(torch.cat([self.up(c5), c4], 1))
        p3 = self.top3(torch.cat([self.up(t4), c3], 1))
        p4 = self.bottom4(torch.cat([self.down3(p3), t4], 1))
        p5 = self.bottom5(torch.cat([self.down4(p4), c5], 1))
        return {"p3": p3, "p4": p4, "p5": p5}
