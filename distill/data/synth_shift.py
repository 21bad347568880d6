"""A site shift for the synthetic benchmark: the same scenes as a camera at another site
would see them (``generate(..., shift=SiteShift(...))``, used by ``benchmarks/adapt.py``).

- ``background="tiles"``: a background family the standard generator never makes: floor
  tiles or bricks (rows of 10-36 px tiles with jittered colours, dark grout lines of 1-2
  px, every other row offset for bricks), whose straight edges and corners look like
  parts of the ``square`` / ``rect`` classes;
- ``cast``: per-channel RGB gains applied after the scene's own lighting (e.g.
  ``(1.25, 0.95, 0.6)``, sodium street light), clipped to 0-255.

Seeded like the scenes: the tiles draw from the image's own generator, so a seed and a
shift give the same images every time. No shift (``SiteShift()``) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.errors import ConfigError

BACKGROUNDS = ("standard", "tiles")


@dataclass(frozen=True)
class SiteShift:
    """How a site's images differ from the standard benchmark's (see the module docstring)."""

    background: str = "standard"
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ConfigError(f"site shift background {self.background!r}: use {BACKGROUNDS}")
        if len(self.cast) != 3 or any(not 0 < g <= 4 for g in self.cast):
            raise ConfigError(f"site shift cast {self.cast}: three RGB gains in (0, 4]")


def tiles(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 RGB tiled floor or brick wall (see the module docstring)."""
    from distill.data.synth_scene import random_color

    th = int(rng.integers(10, 37))
    tw = th if rng.random() < 0.5 else int(th * rng.uniform(1.6, 2.4))  # tiles or bricks
    grout = int(rng.integers(1, 3))
    base = np.array(random_color(rng), np.float32) * np.float32(rng.uniform(0.5, 1.0))
    grout_color = base * np.float32(rng.uniform(0.15, 0.4))
    offset = tw // 2 if tw > th else 0
    img = np.empty((h, w, 3), np.float32)
    for row, y in enumerate(range(0, h, th)):
        shift = offset * (row % 2)
        for x in range(-shift, w, tw):
            jitter = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
            x0 = max(x, 0)
            img[y : y + th, x0 : x + tw] = base * jitter
            img[y : y + grout, x0 : x + tw] = grout_color
            if x + tw - grout >= 0:
                img[y : y + th, max(x + tw - grout, 0) : x + tw] = grout_color
    img += rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(rng.uniform(0, 8))
    return np.clip(img, 0, 255).astype(np.uint8)


def site_background(
    rng: np.random.Generator, h: int, w: int, shift: SiteShift | None
) -> np.ndarray:
    """The background of one image under ``shift`` (None: the standard family)."""
    from distill.data.synth_scene import background

    if shift is not None and shift.background == "tiles":
        return tiles(rng, h, w)
    return background(rng, h, w)


def apply_cast(image: np.ndarray, shift: SiteShift | None) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB under the shift's colour cast."""
    if shift is None or shift.cast == (1.0, 1.0, 1.0):
        return image
    out = image.astype(np.float32) * np.asarray(shift.cast, np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)
