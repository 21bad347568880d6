from __future__ import annotations

import numpy as np
import pytest

from distill.data.transforms import (
    AugmentConfig,
    boxes_to_net,
    boxes_to_original,
    hsv_jitter,
    letterbox,
    mosaic,
    train_sample,
)
from runtime.errors import ConfigError

GRAY = 40


def _scene(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 240x320 image with 3 solid, well separated rectangles; class = colour id.

    Each image has its own colours, so every class id is one colour across images."""
    img = np.full((240, 320, 3), GRAY, dtype=np.uint8)
    rects = [(20, 30, 90, 80), (150, 40, 190, 200), (230, 150, 300, 170)]
    boxes, classes = [], []
    for k, (x1, y1, x2, y2) in enumerate(rects):
        cls = index * 3 + k
        img[y1:y2, x1:x2] = _color(cls)
        boxes.append((x1, y1, x2, y2))
        classes.append(cls)
    return img, np.array(boxes, dtype=np.float32), np.array(classes, dtype=np.int64)


def _color(cls: int) -> tuple[int, int, int]:
    return (100 + 12 * cls, 250 - 15 * cls, 60 + 9 * (cls % 5))


def _assert_boxes_on_pixels(img: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> None:
    """Each box's interior is its rectangle's colour and no pixel of that colour lies in a
    2-pixel band just outside the box (i.e. the box still bounds the rectangle)."""
    h, w = img.shape[:2]
    for (x1, y1, x2, y2), cls in zip(boxes, classes):
        color = np.array(_color(int(cls)), dtype=np.int16)
        match = np.all(np.abs(img.astype(np.int16) - color) <= 2, axis=2)
        ix1, iy1, ix2, iy2 = int(np.ceil(x1 + 1)), int(np.ceil(y1 + 1)), int(x2 - 1), int(y2 - 1)
        assert ix2 > ix1 and iy2 > iy1, (x1, y1, x2, y2)
        assert match[iy1:iy2, ix1:ix2].all(), ("interior", cls, (x1, y1, x2, y2))
        ox1, oy1 = max(int(np.floor(x1)) - 3, 0), max(int(np.floor(y1)) - 3, 0)
        ox2, oy2 = min(int(np.ceil(x2)) + 3, w), min(int(np.ceil(y2)) + 3, h)
        band = match[oy1:oy2, ox1:ox2].copy()
        band[int(np.floor(y1)) - oy1 + 2 : int(np.ceil(y2)) - oy1 - 2,
             int(np.floor(x1)) - ox1 + 2 : int(np.ceil(x2)) - ox1 - 2] = False  # fmt: skip
        inner = np.zeros_like(band)
        inner[max(int(np.floor(y1)) - oy1 - 1, 0) : int(np.ceil(y2)) - oy1 + 1,
              max(int(np.floor(x1)) - ox1 - 1, 0) : int(np.ceil(x2)) - ox1 + 1] = True  # fmt: skip
        assert not (band & ~inner).any(), ("colour outside box", cls, (x1, y1, x2, y2))


def test_letterbox_round_trip_and_pixels() -> None:
    img, boxes, classes = _scene(0)
    out, scale, pad = letterbox(img, 256)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert scale == pytest.approx(0.8) and pad == (0, 32)
    assert (out[:32] == 114).all() and (out[-32:] == 114).all()
    net = boxes_to_net(boxes, scale, pad)
    np.testing.assert_allclose(boxes_to_original(net, scale, pad), boxes, atol=1e-4)
    _assert_boxes_on_pixels(out, net, classes)
    tall = np.zeros((100, 40, 3), dtype=np.uint8)
    out, scale, pad = letterbox(tall, 64)
    assert scale == pytest.approx(0.64) and pad == ((64 - 26) // 2, 0)


@pytest.mark.parametrize("mosaic_p", [0.0, 1.0])
def test_augmentations_keep_boxes_on_the_rectangles(mosaic_p: float) -> None:
    cfg = AugmentConfig(mosaic=mosaic_p, scale=(0.6, 1.4), hsv_h=0, hsv_s=0, hsv_v=0)
    kept = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        img, boxes, classes = train_sample(_scene, seed % 4, 4, cfg, 256, rng)
        assert img.shape == (256, 256, 3) and boxes.dtype == np.float32
        assert boxes.shape == (len(classes), 4)
        assert (boxes >= 0).all() and (boxes <= 256).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) > cfg.min_box_px).all()
        _assert_boxes_on_pixels(img, boxes, classes)
        kept += len(boxes)
    assert kept > 12


def test_flip_is_exercised_and_consistent() -> None:
    cfg = AugmentConfig(mosaic=0, scale=(1, 1), translate=0, flip_lr=1.0, hsv_h=0, hsv_s=0, hsv_v=0)
    img, boxes, classes = train_sample(_scene, 0, 1, cfg, 320, np.random.default_rng(0))
    ref_img, ref_boxes, _ = _scene(0)
    ref, scale, pad = letterbox(ref_img, 320)
    np.testing.assert_array_equal(img, ref[:, ::-1])
    expected = boxes_to_net(ref_boxes, scale, pad)
    np.testing.assert_allclose(boxes[:, [0, 2]], 320 - expected[:, [2, 0]], atol=1e-4)
    _assert_boxes_on_pixels(img, boxes, classes)


def test_mosaic_shapes() -> None:
    rng = np.random.default_rng(0)
    canvas, boxes, classes = mosaic([_scene(k) for k in range(4)], rng, 160)
    assert canvas.shape == (320, 320, 3) and canvas.dtype == np.uint8
    assert boxes.shape == (len(classes), 4) and classes.dtype == np.int64
    assert (boxes >= 0).all() and (boxes <= 320).all()
    assert set(classes.tolist()) <= set(range(12)) and len(set((classes // 3).tolist())) >= 2
    big = (boxes[:, 2:] - boxes[:, :2]).min(axis=1) > 4  # slivers cut by the canvas edge
    _assert_boxes_on_pixels(canvas, boxes[big], classes[big])
    with pytest.raises(ValueError):
        mosaic([_scene(0)], rng, 160)


def test_determinism_and_hsv() -> None:
    cfg = AugmentConfig()
    a = train_sample(_scene, 1, 4, cfg, 192, np.random.default_rng(5))
    b = train_sample(_scene, 1, 4, cfg, 192, np.random.default_rng(5))
    c = train_sample(_scene, 1, 4, cfg, 192, np.random.default_rng(6))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    img = _scene(0)[0]
    jittered = hsv_jitter(img, np.random.default_rng(0), 0.1, 0.5, 0.5)
    assert jittered.shape == img.shape and not np.array_equal(jittered, img)


def test_augment_config_validation() -> None:
    with pytest.raises(ConfigError, match="mosaic"):
        AugmentConfig(mosaic=1.5)
    with pytest.raises(ConfigError, match="scale"):
        AugmentConfig(scale=(1.5, 0.5))
    with pytest.raises(ConfigError, match="translate"):
        AugmentConfig(translate=0.9)
