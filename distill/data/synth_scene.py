"""Drawing primitives of the synthetic scene generator (see ``distill/data/synth.py``).

Everything here is numpy/OpenCV on (H, W, 3) uint8 RGB canvases and takes its randomness
from a ``numpy.random.Generator``. Shapes are polygons in a unit box, scaled, rotated and
filled with anti-aliasing at 1/16-pixel precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

CLASS_NAMES = ("disc", "ring", "square", "rect", "triangle", "trapezoid", "cross", "star")
RING_HOLE = 0.42  # hole radius / outer radius
TRAPEZOID_TOP = 0.3  # top edge / base
CROSS_ARM = 0.34  # arm thickness / size
STAR_INNER = 0.45  # inner radius / outer radius
MAX_ANGLE_DEG = 20.0


def _circle(r: float, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


@cache
def unit_polygons(cls: int) -> tuple[np.ndarray, ...]:
    """Polygons of class ``cls`` in the unit box [-0.5, 0.5]^2 (y down); the first is
    filled, the others are holes."""
    a = CROSS_ARM / 2
    match CLASS_NAMES[cls]:
        case "disc":
            return (_circle(0.5),)
        case "ring":
            return (_circle(0.5), _circle(0.5 * RING_HOLE, 24))
        case "square" | "rect":
            return (np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]),)
        case "triangle":
            return (np.array([[0.0, -0.5], [0.5, 0.5], [-0.5, 0.5]]),)
        case "trapezoid":
            t = TRAPEZOID_TOP / 2
            return (np.array([[-t, -0.5], [t, -0.5], [0.5, 0.5], [-0.5, 0.5]]),)
        case "cross":
            return (
                np.array(
                    [
                        [-a, -0.5],
                        [a, -0.5],
                        [a, -a],
                        [0.5, -a],
                        [0.5, a],
                        [a, a],
                        [a, 0.5],
                        [-a, 0.5],
                        [-a, a],
                        [-0.5, a],
                        [-0.5, -a],
                        [-a, -a],
                    ]
                ),
            )
        case "star":
            t = -np.pi / 2 + np.arange(10) * np.pi / 5
            r = np.where(np.arange(10) % 2 == 0, 0.5, 0.5 * STAR_INNER)
            pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
            return (pts - [0.0, (pts[:, 1].max() + pts[:, 1].min()) / 2],)
    raise ValueError(f"unknown class index {cls}")


@dataclass(frozen=True)
class ObjectSpec:
    """One object to draw: class, centre (px), box size before rotation (px), angle (rad),
    and its fill (``kind`` 0 solid, 1 gradient, 2 stripes)."""

    cls: int
    cx: float
    cy: float
    w: float
    h: float
    angle: float
    color: tuple[int, int, int]
    color2: tuple[int, int, int]
    kind: int
    period: float
    direction: float


def random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    hsv = np.array(
        [[[rng.integers(0, 180), rng.integers(60, 256), rng.integers(60, 256)]]], dtype=np.uint8
    )
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def sample_object(
    rng: np.random.Generator, width: int, height: int, size_range: tuple[float, float]
) -> ObjectSpec:
    """A random object: log-uniform size (longer side), centre anywhere in the image."""
    cls = int(rng.integers(len(CLASS_NAMES)))
    size = float(np.exp(rng.uniform(np.log(size_range[0]), np.log(size_range[1]))))
    name = CLASS_NAMES[cls]
    if name == "rect":
        w, h = size, size / rng.uniform(1.6, 2.2)
        if rng.random() < 0.5:
            w, h = h, w
    elif name in ("triangle", "trapezoid"):
        w, h = size, size * rng.uniform(0.85, 1.0)
    else:
        w, h = size, size * rng.uniform(0.94, 1.0)
    angle = np.deg2rad(rng.uniform(-MAX_ANGLE_DEG, MAX_ANGLE_DEG))
    return ObjectSpec(
        cls=cls,
        cx=float(rng.uniform(0, width)),
        cy=float(rng.uniform(0, height)),
        w=float(w),
        h=float(h),
        angle=float(angle),
        color=random_color(rng),
        color2=random_color(rng),
        kind=int(rng.choice(3, p=[0.5, 0.3, 0.2])),
        period=float(rng.uniform(3.0, 9.0)),
        direction=float(rng.uniform(0, np.pi)),
    )


def render_mask(spec: ObjectSpec) -> tuple[np.ndarray, int, int]:
    """The object's silhouette: (h, w) uint8 coverage 0..255 and its top-left (x0, y0) in
    canvas pixels (may lie outside the canvas)."""
    c, s = np.cos(spec.angle), np.sin(spec.angle)
    rot = np.array([[c, -s], [s, c]])
    polys = [(p * [spec.w, spec.h]) @ rot.T + [spec.cx, spec.cy] for p in unit_polygons(spec.cls)]
    x0, y0 = np.floor(polys[0].min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(polys[0].max(axis=0)).astype(int) + 2
    mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    for k, p in enumerate(polys):
        pts = np.round((p - [x0, y0]) * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], 0 if k else 255, lineType=cv2.LINE_AA, shift=4)
    return mask, int(x0), int(y0)


def fill_patch(spec: ObjectSpec, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 object texture: solid, gradient or stripes."""
    c1 = np.array(spec.color, dtype=np.float32)
    if spec.kind == 0:
        return np.broadcast_to(c1, (h, w, 3))
    c2 = np.array(spec.color2, dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * np.cos(spec.direction) + yy * np.sin(spec.direction)
    if spec.kind == 1:
        t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    else:
        t = (np.sin(2 * np.pi * u / spec.period) > 0).astype(np.float32)
    return c1 + (c2 - c1) * t[..., None]


def paint(canvas: np.ndarray, spec: ObjectSpec, mask: np.ndarray, x0: int, y0: int) -> None:
    """Alpha-composite the object onto ``canvas`` (in place), raising its contrast against
    the local background when the two are nearly the same brightness."""
    H, W = canvas.shape[:2]
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + mask.shape[1], W), min(y0 + mask.shape[0], H)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    m = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    region = canvas[cy0:cy1, cx0:cx1].astype(np.float32)
    fill = fill_patch(spec, mask.shape[0], mask.shape[1])[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    inside = m >= 128
    if inside.any():
        diff = fill[inside].mean() - region[inside].mean()
        if abs(diff) < 40:
            fill = np.clip(fill + (60 if diff >= 0 else -60), 0, 255)
    a = m[..., None].astype(np.float32) / 255.0
    canvas[cy0:cy1, cx0:cx1] = (region * (1 - a) + fill * a).astype(np.uint8)


@cache
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx / max(w, h), yy / max(w, h)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 procedural background: smooth noise or gradient, optionally overlaid
    with stripes and soft blobs (all made at half resolution), plus full-resolution grain."""
    hh, hw = (h + 1) // 2, (w + 1) // 2
    xx, yy = _grid(hh, hw)
    c1 = np.array(random_color(rng), dtype=np.float32) * np.float32(rng.uniform(0.4, 1.0))
    c2 = np.array(random_color(rng), dtype=np.float32) * np.float32(rng.uniform(0.4, 1.0))
    if rng.random() < 0.5:
        gh, gw = int(rng.integers(2, 9)), int(rng.integers(2, 12))
        t = cv2.resize(
            rng.random((gh, gw), dtype=np.float32), (hw, hh), interpolation=cv2.INTER_CUBIC
        )
    else:
        d = rng.uniform(0, 2 * np.pi)
        t = xx * np.float32(np.cos(d)) + yy * np.float32(np.sin(d))
        t = (t - t.min()) / np.float32(max(float(t.max() - t.min()), 1e-6))
    img = c1 + (c2 - c1) * np.clip(t, 0, 1)[..., None]
    if rng.random() < 0.4:
        d, period = rng.uniform(0, np.pi), rng.uniform(0.04, 0.3)
        u = xx * np.float32(np.cos(d) / period) + yy * np.float32(np.sin(d) / period)
        stripes = (u - np.floor(u)) < 0.5
        c3 = np.array(random_color(rng), dtype=np.float32)
        alpha = np.float32(rng.uniform(0.1, 0.4))
        img = np.where(stripes[..., None], img + (c3 - img) * alpha, img)
    if rng.random() < 0.5:
        blobs = np.zeros((hh, hw, 3), dtype=np.float32)
        cover = np.zeros((hh, hw), dtype=np.float32)
        for _ in range(int(rng.integers(3, 12))):
            center = (int(rng.integers(0, hw)), int(rng.integers(0, hh)))
            axes = (int(rng.integers(6, max(7, hw // 4))), int(rng.integers(6, max(7, hh // 4))))
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(blobs, center, axes, angle, 0, 360, random_color(rng), -1)
            cv2.ellipse(cover, center, axes, angle, 0, 360, 1.0, -1)
        sigma = float(rng.uniform(1, 3))
        blobs = cv2.GaussianBlur(blobs, (0, 0), sigma)
        cover = cv2.GaussianBlur(cover, (0, 0), sigma)[..., None] * np.float32(0.5)
        img = img * (1 - cover) + blobs * np.float32(0.5)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    grain = rng.standard_normal(size=(h, w, 1), dtype=np.float32)
    img += grain * np.float32(rng.uniform(0, 12))
    return np.clip(img, 0, 255).astype(np.uint8)


def distractors(canvas: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Clutter that is no class (lines, arcs, thin ellipses), drawn in place."""
    h, w = canvas.shape[:2]
    for _ in range(count):
        color = random_color(rng)
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        match int(rng.integers(3)):
            case 0:
                q = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                cv2.line(canvas, p, q, color, int(rng.integers(1, 4)), cv2.LINE_AA)
            case 1:
                axes = (int(rng.integers(6, w // 3)), int(rng.integers(6, h // 3)))
                start = float(rng.uniform(0, 360))
                cv2.ellipse(
                    canvas,
                    p,
                    axes,
                    0.0,
                    start,
                    start + float(rng.uniform(60, 200)),
                    color,
                    int(rng.integers(1, 3)),
                    cv2.LINE_AA,
                )
            case _:
                major = int(rng.integers(8, max(9, w // 6)))
                axes = (major, max(1, int(major / rng.uniform(3.5, 6.0))))
                cv2.ellipse(
                    canvas, p, axes, float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA
                )


def photometric(
    img: np.ndarray, rng: np.random.Generator, blur_prob: float, max_blur: float, max_noise: float
) -> np.ndarray:
    """Lighting (global gain, colour cast, illumination gradient, gamma), optional Gaussian
    blur, then sensor noise. (H, W, 3) uint8 in and out."""
    h, w = img.shape[:2]
    xx, yy = _grid(h, w)
    d = rng.uniform(0, 2 * np.pi)
    ramp = (xx - xx.mean()) * np.float32(np.cos(d)) + (yy - yy.mean()) * np.float32(np.sin(d))
    illum = np.float32(rng.uniform(0.55, 1.3)) * (1 + np.float32(rng.uniform(-0.8, 0.8)) * ramp)
    cast = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    f = img.astype(np.float32) * illum[..., None] * cast
    out = np.clip(f, 0, 255).astype(np.uint8)
    gamma = rng.uniform(0.75, 1.35)
    lut = (255 * (np.arange(256) / 255.0) ** gamma + 0.5).astype(np.uint8)
    out = cv2.LUT(out, lut)
    if rng.random() < blur_prob:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.5, max_blur)))
    noise = rng.standard_normal(size=out.shape, dtype=np.float32) * np.float32(
        rng.uniform(0, max_noise)
    )
    return np.clip(out + noise, 0, 255).astype(np.uint8)
