"""Settings of the synthetic benchmark's generator (:mod:`distill.data.synth`):
:class:`SynthConfig` and its YAML loader."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from runtime.errors import ConfigError


@dataclass(frozen=True)
class SynthConfig:
    """Generator settings; the defaults are the project's standard benchmark
    (``configs/synth_standard.yaml``). Sizes in pixels of the ``width`` x ``height`` images."""

    train: int = 2000
    val: int = 400
    unlabelled: int = 1000
    video_frames: int = 300
    width: int = 320
    height: int = 240
    video_width: int = 640
    video_height: int = 480
    video_fps: int = 30
    min_objects: int = 2
    max_objects: int = 10
    min_size: float = 8.0
    max_size: float = 112.0
    min_visible: float = 0.4
    placement_tries: int = 10
    max_distractors: int = 6
    blur_prob: float = 0.3
    max_blur: float = 1.6
    max_noise: float = 10.0
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ConfigError(f"synth config: {f.name!r} must be a number >= 0, got {v!r}")
            if isinstance(f.default, int) and not isinstance(v, int):
                raise ConfigError(f"synth config: {f.name!r} must be an integer, got {v!r}")
            if isinstance(f.default, float):
                object.__setattr__(self, f.name, float(v))
        if self.train < 1 or self.val < 1:
            raise ConfigError("synth config: 'train' and 'val' must be at least 1")
        if self.width < 32 or self.height < 32 or self.video_width < 32 or self.video_height < 32:
            raise ConfigError("synth config: image and video sizes must be at least 32 px")
        if not 0 < self.min_size <= self.max_size <= min(self.width, self.height):
            raise ConfigError("synth config: need 0 < min_size <= max_size <= min(width, height)")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ConfigError("synth config: need 1 <= min_objects <= max_objects")
        if not 0 <= self.min_visible <= 1 or not 0 <= self.blur_prob <= 1:
            raise ConfigError("synth config: 'min_visible' and 'blur_prob' must be in [0, 1]")
        if not 1 <= self.jpeg_quality <= 100 or self.video_fps < 1:
            raise ConfigError("synth config: need 1 <= jpeg_quality <= 100 and video_fps >= 1")


def load_synth_config(
    path: str | Path | None, overrides: dict[str, Any] | None = None
) -> SynthConfig:
    """SynthConfig from a YAML mapping of its fields (unknown keys: ConfigError naming the
    key), then ``overrides`` (None values ignored)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"{path}: config file not found") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of synth settings")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in fields(SynthConfig)}
    for key in values:
        if key not in known:
            raise ConfigError(
                f"{path or 'synth config'}: unknown key {key!r} (known: {', '.join(sorted(known))})"
            )
    return SynthConfig(**values)
