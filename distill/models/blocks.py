"""Building blocks of the detector family: Conv-BN-SiLU, CSP bottleneck stacks, SPPF.

Every op here exports to ONNX opset 17 as Conv / BatchNormalization (folded on export) /
Sigmoid+Mul (SiLU) / Split / Concat / MaxPool / Add, all supported by TensorRT.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm -> SiLU. (B, c_in, H, W) -> (B, c_out, H/s, W/s)."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3x3 convs with an optional residual add; keeps (B, c, H, W)."""

    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = ConvBNAct(c, c, 3)
        self.cv2 = ConvBNAct(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class CSPBlock(nn.Module):
    """Cross-stage-partial stack: split a 1x1 projection in two halves, run ``n``
    bottlenecks on one half, concatenate every intermediate output, fuse with a 1x1 conv.

    (B, c_in, H, W) -> (B, c_out, H, W).
    """

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.hidden = c_out // 2
        self.cv1 = ConvBNAct(c_in, 2 * self.hidden, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(n))
        self.cv2 = ConvBNAct((2 + n) * self.hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.cv1(x).chunk(2, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max-pools, concatenated.

    (B, c_in, H, W) -> (B, c_out, H, W).
    """

    def __init__(self, c_in: int, c_out: int, k: int = 5) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = ConvBNAct(c_in, hidden, 1)
        self.pool = nn.MaxPool2d(k, 1, k // 2)
        self.cv2 = ConvBNAct(4 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, dim=1))
