"""The candidate grid of ``understudy auto``: points of the one detector family.

A candidate is a (width multiplier, depth multiplier, square input size) point; the
architecture is :func:`distill.models.presets.build_detector` at that :class:`Scale`.
The documented grid lives in ``configs/auto_grid.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.models.presets import PRESETS, Scale
from runtime.errors import ConfigError

DEFAULT_GRID = Path(__file__).resolve().parents[2] / "configs" / "auto_grid.yaml"
BUILTIN_PRESETS = tuple(PRESETS)  # nano .. large (names added at run time are not presets)


@dataclass(frozen=True)
class GridConfig:
    """The screen's grid and measurement settings (YAML keys of ``configs/auto_grid.yaml``)."""

    widths: tuple[float, ...] = (0.125, 0.1875, 0.25, 0.375)
    depths: tuple[float, ...] = (0.33, 0.67)
    inputs: tuple[int, ...] = (224, 256, 320)
    max_channels: int = 1024
    warmup: int = 10
    runs: int = 100
    frame_width: int = 640
    frame_height: int = 480
    calibration_batches: int = 4

    def __post_init__(self) -> None:
        for key in ("widths", "depths", "inputs"):
            if not getattr(self, key):
                raise ConfigError(f"grid: {key} must list at least one value")
        if any(w <= 0 for w in self.widths) or any(d <= 0 for d in self.depths):
            raise ConfigError("grid: widths and depths must be > 0")
        bad = [s for s in self.inputs if s <= 0 or s % 32]
        if bad:
            raise ConfigError(f"grid: inputs must be positive multiples of 32 (got {bad[0]})")
        if self.runs < 2 or self.warmup < 0 or self.calibration_batches < 0:
            raise ConfigError("grid: runs must be >= 2, warmup and calibration_batches >= 0")
        if self.frame_width <= 0 or self.frame_height <= 0 or self.max_channels < 8:
            raise ConfigError("grid: frame_width/frame_height must be > 0, max_channels >= 8")


@dataclass(frozen=True)
class Candidate:
    """One candidate student: a family point at a square input size."""

    width: float
    depth: float
    input: int
    max_channels: int = 1024

    @property
    def scale(self) -> Scale:
        return Scale(self.width, self.depth, self.max_channels)

    @property
    def model_name(self) -> str:
        """Name of the architecture (input-size independent), e.g. ``w0.25-d0.33``."""
        return f"w{self.width:g}-d{self.depth:g}"

    @property
    def name(self) -> str:
        """Unique name of the candidate, e.g. ``w0.25-d0.33-256``."""
        return f"{self.model_name}-{self.input}"

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "name": self.name,
            "width": self.width,
            "depth": self.depth,
            "input": self.input,
            "max_channels": self.max_channels,
        }


def load_grid(path: str | Path | None = None, overrides: list[str] | None = None) -> GridConfig:
    """Read a grid YAML (default ``configs/auto_grid.yaml`` if present, else the built-in
    defaults, which are the same values)."""
    from distill.config import load

    if path is None and DEFAULT_GRID.is_file():
        path = DEFAULT_GRID
    return load(GridConfig, path, overrides)


def candidates(grid: GridConfig, input_size: int | None = None) -> list[Candidate]:
    """Every grid point, small to large; ``input_size`` (a budget's ``latency.input``)
    replaces the grid's input sizes when given."""
    inputs = (input_size,) if input_size is not None else tuple(sorted(set(grid.inputs)))
    if input_size is not None and (input_size <= 0 or input_size % 32):
        raise ConfigError(f"budget latency.input {input_size} must be a multiple of 32")
    return [
        Candidate(w, d, s, grid.max_channels)
        for w in sorted(set(grid.widths))
        for d in sorted(set(grid.depths))
        for s in inputs
    ]


def matching_preset(candidate: Candidate) -> str | None:
    """The preset with the same architecture as ``candidate`` (same built channel widths
    and depths, so the same parameter count), or None when it is off the presets."""
    from distill.models.flops import count_params
    from distill.models.presets import build_detector

    for name in BUILTIN_PRESETS:
        scale = PRESETS[name]
        if (scale.width, scale.depth) != (candidate.width, candidate.depth):
            continue
        if scale.max_channels == candidate.max_channels:
            return name
        ours = count_params(build_detector(candidate.scale, 1))
        if ours == count_params(build_detector(scale, 1)):
            return name
    return None
