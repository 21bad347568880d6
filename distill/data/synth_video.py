"""The synthetic benchmark's short video: smoothly moving objects for the streaming demo.

Objects of the benchmark's classes (sizes scaled by ``video_width / width``) drift at
constant speed, bounce off the frame border, swing slowly within the training rotation
range (+-20 deg) and pulse in size by +-15 %; the background is fixed and the lighting
varies slowly, with fresh sensor noise per frame.
Written as ``video.mp4`` (mp4v); if OpenCV cannot write or read that back here, as
``video.avi`` (MJPG). The file is checked to read back with ``cv2.VideoCapture``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from distill.data.synth_config import SynthConfig
from distill.data.synth_scene import (
    MAX_ANGLE_DEG,
    distractors,
    paint,
    render_mask,
    sample_object,
)
from distill.data.synth_shift import SiteShift, apply_cast, site_background
from runtime.errors import DataError


def video_frames(
    rng: np.random.Generator, cfg: SynthConfig, shift: SiteShift | None = None
) -> Iterator[np.ndarray]:
    """Yield ``cfg.video_frames`` frames, each (video_height, video_width, 3) uint8 RGB
    (under a site ``shift``: its background family and colour cast)."""
    w, h = cfg.video_width, cfg.video_height
    k = w / cfg.width
    bg = site_background(rng, h, w, shift)
    distractors(bg, rng, int(rng.integers(0, cfg.max_distractors + 1)))
    n = int(rng.integers(max(cfg.min_objects, 6), max(cfg.max_objects, 6) + 1))
    specs = [sample_object(rng, w, h, (cfg.min_size * k, cfg.max_size * k)) for _ in range(n)]
    vel = rng.uniform(-3.0, 3.0, size=(n, 2)) * k / 2
    swing = rng.uniform(60, 200, size=n)  # frames per rotation swing
    phase = rng.uniform(0, 2 * np.pi, size=n)
    pos = np.array([[s.cx, s.cy] for s in specs])
    light_phase = rng.uniform(0, 2 * np.pi)
    for t in range(cfg.video_frames):
        canvas = bg.copy()
        for j, s in enumerate(specs):
            pulse = 1 + 0.15 * np.sin(2 * np.pi * t / 90 + phase[j])
            angle = float(np.deg2rad(MAX_ANGLE_DEG) * np.sin(2 * np.pi * t / swing[j] + phase[j]))
            spec = replace(
                s,
                cx=float(pos[j, 0]),
                cy=float(pos[j, 1]),
                w=s.w * pulse,
                h=s.h * pulse,
                angle=angle,
            )
            mask, x0, y0 = render_mask(spec)
            paint(canvas, spec, mask, x0, y0)
        gain = 0.9 + 0.25 * np.sin(2 * np.pi * t / 150 + light_phase)
        noise = rng.standard_normal(size=canvas.shape, dtype=np.float32) * np.float32(3.0)
        f = canvas.astype(np.float32) * np.float32(gain) + noise
        yield apply_cast(np.clip(f, 0, 255).astype(np.uint8), shift)
        pos += vel
        for axis, limit in ((0, w), (1, h)):
            out = (pos[:, axis] < 0) | (pos[:, axis] > limit)
            vel[out, axis] *= -1
            pos[:, axis] = pos[:, axis].clip(0, limit)


def _write(path: Path, fourcc: str, frames: Iterator[np.ndarray], cfg: SynthConfig) -> bool:
    """Stream ``frames`` into ``path``; True if it reads back with the right frame count."""
    w, h, fps = cfg.video_width, cfg.video_height, cfg.video_fps
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
    if not writer.isOpened():
        return False
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.isOpened():
        ok, frame = cap.read()
        if not ok:
            break
        n += frame.shape[:2] == (h, w)
    cap.release()
    return n == cfg.video_frames


def write_video(stem: Path, seed: int, cfg: SynthConfig, shift: SiteShift | None = None) -> Path:
    """Render the video (``default_rng([seed, 3])``) into ``stem.mp4`` (or ``stem.avi``),
    one frame at a time; returns the file."""
    for suffix, fourcc in ((".mp4", "mp4v"), (".avi", "MJPG")):
        path = stem.with_suffix(suffix)
        frames = video_frames(np.random.default_rng([seed, 3]), cfg, shift)
        if _write(path, fourcc, frames, cfg):
            return path
        path.unlink(missing_ok=True)
    raise DataError(f"{stem}: OpenCV could not write a readable .mp4 or .avi video here")
