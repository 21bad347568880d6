"""Assigner and detection-loss properties."""

from __future__ import annotations

import torch

from distill.losses.assigner import task_aligned_assign
from distill.losses.detection import LossWeights, detection_loss, dfl_loss, split_targets
from distill.losses.iou import giou
from distill.models.head import HeadOutput, make_anchors


def test_split_targets_pads_per_image() -> None:
    t = torch.tensor(
        [[1, 2, 0, 0, 5, 5], [0, 1, 1, 1, 4, 4], [1, 0, 2, 2, 8, 8]], dtype=torch.float
    )
    labels, boxes, valid = split_targets(t, batch_size=3)
    assert labels.shape == (3, 2)
    assert labels[0].tolist() == [1, -1] and labels[1].tolist() == [2, 0]
    assert valid.sum(1).tolist() == [1, 2, 0]
    assert boxes[1, 1].tolist() == [2, 2, 8, 8]


def test_assigner_picks_anchors_inside_the_box_with_its_class() -> None:
    points, _ = make_anchors(((8, 8),), (8,))
    a = points.shape[0]
    scores = torch.full((1, a, 3), 0.5)
    gt = torch.tensor([[[16.0, 16.0, 40.0, 40.0]]])
    pred = gt.expand(1, a, 4).clone()
    res = task_aligned_assign(
        scores, pred, points, torch.tensor([[2]]), gt, torch.tensor([[True]]), topk=4
    )
    fg_points = points[res.fg[0]]
    assert 1 <= len(fg_points) <= 4
    assert torch.all((fg_points > 16) & (fg_points < 40))
    assert torch.all(res.labels[0][res.fg[0]] == 2)
    assert torch.all(res.scores[0][~res.fg[0]] == 0)
    assert res.scores[0][res.fg[0]][:, 2].max() > 0.99  # best anchor gets the box's best IoU (1.0)


def test_anchor_claimed_twice_goes_to_higher_iou() -> None:
    points = torch.tensor([[10.0, 10.0]])
    gts = torch.tensor([[[0.0, 0.0, 20.0, 20.0], [5.0, 5.0, 60.0, 60.0]]])
    pred = torch.tensor([[[1.0, 1.0, 19.0, 19.0]]])
    res = task_aligned_assign(
        torch.full((1, 1, 2), 0.5),
        pred,
        points,
        torch.tensor([[0, 1]]),
        gts,
        torch.tensor([[True, True]]),
        topk=1,
    )
    assert res.fg[0, 0] and res.gt_index[0, 0] == 0 and res.labels[0, 0] == 0


def test_giou_and_dfl_basics() -> None:
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert torch.allclose(giou(b, b), torch.ones(1))
    far = torch.tensor([[20.0, 20.0, 30.0, 30.0]])
    assert giou(b, far).item() < 0
    sharp = torch.full((1, 4, 16), -20.0)
    sharp[..., 3] = 20.0
    assert dfl_loss(sharp, torch.full((1, 4), 3.0)).item() < 1e-3
    assert dfl_loss(sharp, torch.full((1, 4), 9.0)).item() > 1.0


def _head(b: int, shapes, c: int, r: int = 16, requires_grad: bool = True) -> HeadOutput:
    a = sum(h * w for h, w in shapes)
    cls = torch.randn(b, a, c, requires_grad=requires_grad)
    dist = torch.randn(b, a, 4, r, requires_grad=requires_grad)
    return HeadOutput(cls, dist, tuple(shapes))


def test_detection_loss_grad_and_empty_targets() -> None:
    torch.manual_seed(0)
    out = _head(2, ((8, 8), (4, 4), (2, 2)), 3)
    t = torch.tensor([[0, 1, 8, 8, 40, 40], [1, 2, 20, 4, 60, 30]], dtype=torch.float)
    loss, logs, asg = detection_loss(out, t, (8, 16, 32))
    assert set(logs) == {"box", "cls", "dfl"} and asg.fg.any()
    loss.backward()
    assert out.cls.grad is not None and out.dist.grad.abs().sum() > 0
    empty, logs, asg = detection_loss(
        _head(2, ((8, 8), (4, 4), (2, 2)), 3), torch.zeros(0, 6), (8, 16, 32)
    )
    assert torch.isfinite(empty) and logs["box"] == 0 and not asg.fg.any()


def test_bce_and_qfl_both_supported() -> None:
    out = _head(1, ((4, 4),), 2, requires_grad=False)
    t = torch.tensor([[0, 0, 4, 4, 28, 28]], dtype=torch.float)
    l1, _, _ = detection_loss(out, t, (8,), LossWeights(cls_loss="qfl"))
    l2, _, _ = detection_loss(out, t, (8,), LossWeights(cls_loss="bce"))
    assert torch.isfinite(l1) and torch.isfinite(l2) and l1.item() != l2.item()
