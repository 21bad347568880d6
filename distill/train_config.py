"""The training hyper-parameters (:class:`TrainConfig`, the YAML keys of
``configs/*.yaml``) and what their ``bf16`` modes mean on a device."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from distill.data.transforms import AugmentConfig
from distill.losses.detection import LossWeights
from distill.models.presets import PRESETS, Scale
from runtime.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (YAML keys of ``configs/*.yaml``)."""

    model: str = "nano"
    width: float = 0.0  # width multiplier; 0: the preset's (any other: a point off the presets)
    depth: float = 0.0  # depth multiplier; 0: the preset's
    max_channels: int = 0  # channel cap; 0: the preset's
    img_size: int = 320
    epochs: int = 30
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 0.002
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.05
    ema_decay: float = 0.9998
    ema_tau: float = 300.0
    grad_clip: float = 10.0
    bf16: str = "auto"  # "auto" (if the CPU/GPU supports it), "on", "off"
    seed: int = 0
    close_mosaic: int = 2  # last N epochs train without mosaic
    eval_every: int = 0  # 0: evaluate only at the end
    labelled_fraction: float = 1.0  # keep this fraction of labelled images (label-scarce runs)
    max_steps: int = 0  # stop after N optimizer steps (tests, smoke runs); 0 = no limit
    save_every: int = 0  # also write last.pt every N optimizer steps mid-epoch; 0 = epoch ends
    workers: int = 0
    cache: bool = True
    skip_bad: bool = False  # leave out damaged images and label lines (--skip-bad)
    init: str = ""  # start from this checkpoint's weights ("" = random init; distill/finetune.py)
    freeze: int = 0  # freeze the first N backbone blocks (stem, stage1..4); 0 = none
    loss: LossWeights = field(default_factory=LossWeights)
    aug: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.model not in PRESETS:
            raise ConfigError(f"model {self.model!r} is not a preset ({', '.join(PRESETS)})")
        if self.width < 0 or self.depth < 0 or self.max_channels < 0:
            raise ConfigError("width, depth and max_channels must be >= 0 (0: the preset's)")
        if self.max_channels and self.max_channels < 8:
            raise ConfigError(f"max_channels {self.max_channels} must be >= 8")
        if self.img_size % 32:
            raise ConfigError(f"img_size {self.img_size} must be a multiple of 32")
        if self.bf16 not in ("auto", "on", "off"):
            raise ConfigError(f"bf16 {self.bf16!r} must be auto, on or off")
        if not 0 < self.labelled_fraction <= 1:
            raise ConfigError("labelled_fraction must be in (0, 1]")
        if not 0 <= self.freeze <= 5:
            raise ConfigError(f"freeze {self.freeze} must be in 0..5 (stem, stage1..stage4)")
        if self.save_every < 0:
            raise ConfigError("save_every must be >= 0 (0: last.pt at epoch ends only)")

    def scale(self) -> Scale:
        """The architecture: the preset's width/depth/channel cap, overridden where set."""
        base = PRESETS[self.model]
        return Scale(
            self.width or base.width,
            self.depth or base.depth,
            self.max_channels or base.max_channels,
        )

    @property
    def arch_name(self) -> str:
        """The preset name, or ``w<width>-d<depth>`` for a point off the presets (its
        channel cap is in the checkpoint's ``scale``)."""
        s = self.scale()
        return self.model if s == PRESETS[self.model] else f"w{s.width:g}-d{s.depth:g}"


def bf16_enabled(mode: str, device: torch.device | None = None) -> bool:
    """Whether to run under bf16 autocast for a ``bf16`` mode (``TrainConfig.bf16``,
    ``kd.teacher_bf16``): "on", "off", or "auto" = where ``device`` (None: the CPU)
    supports it."""
    if mode == "off":
        return False
    if mode == "on":
        return True
    if device is not None and device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
