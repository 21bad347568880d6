"""Detection augmentations on numpy/OpenCV images that keep boxes on the same pixels.

Images are (H, W, 3) uint8 RGB; boxes are (N, 4) float32 xyxy in the pixels of the image
they come with; classes are (N,) int64. Every random choice comes from a
``numpy.random.Generator`` passed in, so a seeded generator gives the same output.

Letterbox convention (shared with ``runtime/preprocess.py``): ``scale = min(S / h, S / w)``,
resized size ``(round(w * scale), round(h * scale))``, pad ``((S - new_w) // 2,
(S - new_h) // 2)`` on the left/top filled with gray 114; then
``net = original * scale + pad`` and ``original = (net - pad) / scale``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.errors import ConfigError
from runtime.preprocess import Letterbox

PAD_VALUE = 114

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]  # image, boxes (N, 4) xyxy, classes (N,)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation settings (probabilities in [0, 1], ranges as (low, high)).

    Attributes:
        mosaic: probability of a 4-image mosaic instead of a single letterboxed image.
        scale: random zoom range applied by the affine step.
        translate: random shift, as a fraction of the output size, in each direction.
        flip_lr: probability of a horizontal flip.
        hsv_h: hue shift range, fraction of the hue circle (+-).
        hsv_s, hsv_v: saturation/value gain range (gain in [1 - x, 1 + x]).
        min_box_px: boxes narrower or lower than this (output pixels) are dropped.
        min_area_frac: boxes keeping less than this fraction of their area after clipping
            to the output are dropped.
    """

    mosaic: float = 0.5
    scale: tuple[float, float] = (0.5, 1.5)
    translate: float = 0.1
    flip_lr: float = 0.5
    hsv_h: float = 0.015
    hsv_s: float = 0.5
    hsv_v: float = 0.3
    min_box_px: float = 2.0
    min_area_frac: float = 0.2

    def __post_init__(self) -> None:
        for name in ("mosaic", "flip_lr", "min_area_frac", "hsv_h", "hsv_s", "hsv_v"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"augment.{name} must be in [0, 1], got {v}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ConfigError(
                f"augment.scale must be (low, high) with 0 < low <= high, got {self.scale}"
            )
        if not 0.0 <= self.translate <= 0.5:
            raise ConfigError(f"augment.translate must be in [0, 0.5], got {self.translate}")
        if self.min_box_px < 0:
            raise ConfigError(f"augment.min_box_px must be >= 0, got {self.min_box_px}")


def letterbox(
    img: np.ndarray, size: int, src_hw: tuple[int, int] | None = None
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping aspect ratio and pad to (size, size) with gray 114.

    Args:
        img: (h, w, 3) uint8.
        size: output side S.
        src_hw: the size the scale is computed from, if ``img`` is a resized copy of an
            original of that size (the returned scale then maps original pixels).

    Returns:
        (S, S, 3) uint8 image, scale, pad (x, y): ``net = src * scale + pad``.
    """
    lb = Letterbox.fit(tuple(src_hw or img.shape[:2]), (size, size))  # the runtime's geometry
    scale, (nh, nw), px, py = lb.scale, lb.resized, lb.pad_x, lb.pad_y
    if img.shape[:2] != (nh, nw):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    out[py : py + nh, px : px + nw] = img
    return out, scale, (px, py)


def boxes_to_net(boxes: np.ndarray, scale: float, pad: tuple[float, float]) -> np.ndarray:
    """(N, 4) xyxy original pixels -> letterboxed network-input pixels."""
    offset = np.array([pad[0], pad[1], pad[0], pad[1]], dtype=np.float32)
    return (boxes * np.float32(scale) + offset).astype(np.float32)


def boxes_to_original(boxes: np.ndarray, scale: float, pad: tuple[float, float]) -> np.ndarray:
    """(N, 4) xyxy network-input pixels -> original-image pixels."""
    offset = np.array([pad[0], pad[1], pad[0], pad[1]], dtype=np.float32)
    return ((boxes - offset) / np.float32(scale)).astype(np.float32)


def filter_boxes(
    before: np.ndarray, after: np.ndarray, min_px: float, min_area_frac: float
) -> np.ndarray:
    """(N,) bool: boxes that stay usable after clipping (``before`` unclipped, same frame)."""
    w, h = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    area0 = (before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1])
    return (w > min_px) & (h > min_px) & (w * h > min_area_frac * np.maximum(area0, 1e-6))


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    out = boxes.copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def random_affine(
    img: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    out_size: int,
) -> Sample:
    """Random zoom about the image centre plus a random shift, output (S, S).

    The input centre maps to the output centre (shifted by ``translate``), so a 2S x 2S
    mosaic canvas is cropped to its central region and an S x S image stays in place.
    """
    s = rng.uniform(*cfg.scale)
    tx, ty = rng.uniform(-cfg.translate, cfg.translate, size=2) * out_size
    h, w = img.shape[:2]
    m = np.array([[s, 0.0, out_size / 2 + tx - s * w / 2], [0.0, s, out_size / 2 + ty - s * h / 2]])
    out = cv2.warpAffine(
        img,
        m,
        (out_size, out_size),
        flags=cv2.INTER_LINEAR,
        borderValue=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )
    moved = boxes * np.float32(s) + np.array([m[0, 2], m[1, 2]] * 2, dtype=np.float32)
    clipped = clip_boxes(moved, out_size, out_size)
    keep = filter_boxes(moved, clipped, cfg.min_box_px, cfg.min_area_frac)
    return out, clipped[keep].astype(np.float32), classes[keep]


def flip_lr(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; boxes follow."""
    w = img.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return np.ascontiguousarray(img[:, ::-1]), out


def hsv_jitter(
    img: np.ndarray, rng: np.random.Generator, h: float, s: float, v: float
) -> np.ndarray:
    """Random hue shift and saturation/value gains on an RGB uint8 image."""
    dh = rng.uniform(-h, h) * 180.0
    gs, gv = rng.uniform(1 - s, 1 + s), rng.uniform(1 - v, 1 + v)
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x + dh) % 180).astype(np.uint8)
    lut_s = np.clip(x * gs, 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gv, 0, 255).astype(np.uint8)
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def resize_long_side(
    img: np.ndarray, boxes: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resize so that the longer side is ``size``; boxes follow."""
    h, w = img.shape[:2]
    r = size / max(h, w)
    if r == 1.0:
        return img, boxes
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    out = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, boxes * np.array([nw / w, nh / h, nw / w, nh / h], dtype=np.float32)


def mosaic(samples: list[Sample], rng: np.random.Generator, size: int) -> Sample:
    """Four images around a random centre on a (2S, 2S) gray canvas.

    Each image is resized to long side S; image 0 sits top-left of the centre, then
    top-right, bottom-left, bottom-right. Boxes are clipped to each tile's visible part
    (nothing is filtered here; the affine step that follows filters).
    """
    if len(samples) != 4:
        raise ValueError("mosaic needs exactly 4 samples")
    canvas = np.full((2 * size, 2 * size, 3), PAD_VALUE, dtype=np.uint8)
    xc, yc = (int(v) for v in rng.uniform(0.5 * size, 1.5 * size, size=2))
    all_boxes, all_classes = [], []
    for k, (img, boxes, classes) in enumerate(samples):
        img, boxes = resize_long_side(img, boxes, size)
        h, w = img.shape[:2]
        x0 = xc - w if k in (0, 2) else xc  # tile's top-left corner on the canvas
        y0 = yc - h if k in (0, 1) else yc
        cx1, cy1 = max(x0, 0), max(y0, 0)
        cx2, cy2 = min(x0 + w, 2 * size), min(y0 + h, 2 * size)
        canvas[cy1:cy2, cx1:cx2] = img[cy1 - y0 : cy2 - y0, cx1 - x0 : cx2 - x0]
        moved = boxes + np.array([x0, y0, x0, y0], dtype=np.float32)
        moved[:, [0, 2]] = moved[:, [0, 2]].clip(cx1, cx2)
        moved[:, [1, 3]] = moved[:, [1, 3]].clip(cy1, cy2)
        ok = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
        all_boxes.append(moved[ok])
        all_classes.append(classes[ok])
    return canvas, np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_classes)


def train_sample(
    load: Callable[[int], Sample],
    index: int,
    num_images: int,
    cfg: AugmentConfig,
    size: int,
    rng: np.random.Generator,
) -> Sample:
    """One augmented (S, S) training sample: [mosaic | letterbox] -> affine -> flip -> HSV.

    Args:
        load: index -> (image (h, w, 3) uint8 RGB, boxes (N, 4) xyxy in its pixels, classes).
        index: the sample's own image; mosaic partners are drawn from ``rng``.
    """
    if rng.random() < cfg.mosaic:
        others = rng.integers(0, num_images, size=3)
        img, boxes, classes = mosaic([load(index)] + [load(int(j)) for j in others], rng, size)
    else:
        img, boxes, classes = load(index)
        img, scale, pad = letterbox(img, size)
        boxes = boxes_to_net(boxes, scale, pad)
    img, boxes, classes = random_affine(img, boxes, classes, rng, cfg, size)
    if rng.random() < cfg.flip_lr:
        img, boxes = flip_lr(img, boxes)
    if cfg.hsv_h or cfg.hsv_s or cfg.hsv_v:
        img = hsv_jitter(img, rng, cfg.hsv_h, cfg.hsv_s, cfg.hsv_v)
    return img, boxes, classes
