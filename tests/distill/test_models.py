"""Shape and budget tests of the detector family."""

from __future__ import annotations

import pytest
import torch

from distill.models.flops import count_flops
from distill.models.head import boxes_to_distances, distances_to_boxes, make_anchors
from distill.models.presets import PRESETS, build, build_detector


@pytest.mark.parametrize("preset", list(PRESETS))
def test_forward_shapes_and_features(preset: str) -> None:
    model = build(preset, num_classes=5).eval()
    x = torch.rand(2, 3, 128, 96)  # non-square, multiples of 32
    out, feats = model(x, return_features=True)
    a = 16 * 12 + 8 * 6 + 4 * 3
    assert out.cls.shape == (2, a, 5)
    assert out.dist.shape == (2, a, 4, model.reg_max)
    assert out.shapes == ((16, 12), (8, 6), (4, 3))
    assert list(feats) == ["p3", "p4", "p5"]
    for (name, f), stride in zip(feats.items(), (8, 16, 32)):
        assert f.shape[0] == 2 and f.shape[2:] == (128 // stride, 96 // stride)
        assert f.shape[1] == model.neck.out_channels[name]
    boxes, scores = model.decode(out)
    assert boxes.shape == (2, a, 4) and scores.shape == (2, a, 5)
    assert torch.all(boxes[..., 2:] >= boxes[..., :2])
    assert scores.min() >= 0 and scores.max() <= 1


def test_flop_budgets() -> None:
    nano = count_flops(build("nano", 8), 320)
    large = count_flops(build("large", 8), 320)
    assert nano <= 1.0e9, f"nano has {nano / 1e9:.3f} GFLOPs at 320, budget is 1.0"
    assert large >= 10 * nano, "the default teacher must have at least 10x the nano FLOPs"
    flops = [count_flops(build(p, 8), 320) for p in PRESETS]
    assert flops == sorted(flops), "presets must grow monotonically"


def test_one_scaling_rule() -> None:
    a = build_detector(PRESETS["small"], 3)
    b = build("small", 3)
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


def test_box_distance_round_trip() -> None:
    points, strides = make_anchors(((4, 4), (2, 2)), (8, 16))
    assert points.shape == (20, 2) and strides.shape == (20, 1)
    assert torch.allclose(points[0], torch.tensor([4.0, 4.0]))
    assert torch.allclose(points[16], torch.tensor([8.0, 8.0]))
    boxes = torch.cat([points - 5.0, points + 7.0], -1)[None]
    d = boxes_to_distances(boxes, points, strides, reg_max=16)
    assert torch.allclose(distances_to_boxes(d, points, strides), boxes, atol=1e-5)


def test_bf16_forward_runs() -> None:
    model = build("nano", 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(1, 3, 64, 64))
    assert torch.isfinite(out.cls.float()).all()
