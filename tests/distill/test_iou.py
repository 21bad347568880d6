"""The torch box overlaps: IoU (assigner) and GIoU (box loss) agree where they must."""

from __future__ import annotations

import torch

from distill.losses.iou import box_iou_pairwise, giou


def test_iou_values_and_broadcasting() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])  # (1, 4)
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    iou = box_iou_pairwise(a[:, None, :], b[None, :, :])  # (1, 3)
    assert iou.shape == (1, 3)
    assert torch.allclose(iou[0], torch.tensor([1.0, 50 / 150, 0.0]), atol=1e-6)
    inverted = torch.tensor([[10.0, 10.0, 0.0, 0.0]])  # x2 < x1: area 0, overlaps nothing
    assert box_iou_pairwise(inverted, a).item() == 0.0


def test_giou_is_iou_minus_the_empty_share_of_the_hull() -> None:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(64, 2, generator=g) * 100
    a = torch.cat([xy, xy + 1 + torch.rand(64, 2, generator=g) * 40], 1)
    xy = torch.rand(64, 2, generator=g) * 100
    b = torch.cat([xy, xy + 1 + torch.rand(64, 2, generator=g) * 40], 1)
    iou = box_iou_pairwise(a, b)
    assert (giou(a, b) <= iou + 1e-6).all()
    nested = torch.tensor([[2.0, 2.0, 8.0, 8.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert torch.allclose(giou(*nested), box_iou_pairwise(*nested))  # the hull is the union
