"""The settings of ``understudy adapt`` (:class:`AdaptConfig`; YAML keys, ``--set k=v``)."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import ConfigError


@dataclass(frozen=True)
class AdaptConfig:
    """What an adaptation run does; the rest of the training config is the deployed
    student's own (architecture, input size, augmentation, loss weights)."""

    # the schedule: short, from the deployed weights, early blocks frozen, a small LR
    epochs: int = 6  # passes over the replayed original data (site frames cycle within)
    lr: float = 0.0004  # peak learning rate (the deployed run's default is 0.002)
    warmup_epochs: float = 0.3
    freeze: int = 2  # backbone blocks kept as deployed (stem, stage1, ...)
    batch_size: int = 0  # 0: the deployed run's
    replay_fraction: float = 1.0  # share of the original train split replayed
    # wall-time budget of the whole run, in minutes (0: none); the replayed share (and if
    # need be the epochs) is cut so that the run fits (distill/adapt/budget.py)
    minutes: float = 0.0
    site_ratio: float = 0.5  # share of each batch that is site frames
    method: str = "auto"  # KD method; auto: hybrid for a .pt teacher, logit for .onnx
    pseudo_threshold: float = 0.45  # teacher detections that become site pseudo-labels
    seed: int = 0
    bf16: str = "auto"
    workers: int = 0
    # early stopping on the "stop" share of the site frames
    patience: int = 2  # epochs without a better stop-share score before stopping
    # the time-ordered hold-out (distill/adapt/split.py)
    test_share: float = 0.25
    stop_share: float = 0.15
    gap: int = 0
    video_stride: int = 10  # every N-th frame of a site video
    # scoring and the gate (distill/adapt/evaluate.py, gate.py)
    score_threshold: float = 0.25  # the deployed operating point (serve's default)
    iou_threshold: float = 0.5
    site_metric: str = "map50_95"  # agreement metric: map50_95 (vs teacher) or f1
    min_gain: float = 1.0  # points of site metric the adapted student must gain
    max_drop: float = 1.0  # points of original val mAP50-95 it may lose
    # the teacher check before adapting: the teacher must lead the deployed student on
    # the original val split by this many mAP50-95 points (distill/teacher_check.py)
    teacher_margin: float = 2.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"adapt epochs must be >= 1, got {self.epochs}")
        if self.minutes < 0:
            raise ConfigError(f"adapt minutes must be >= 0 (0: no budget), got {self.minutes}")
        if self.lr <= 0:
            raise ConfigError(f"adapt lr must be > 0, got {self.lr}")
        if not 0 <= self.site_ratio < 1:
            raise ConfigError(f"adapt site_ratio must be in [0, 1), got {self.site_ratio}")
        if self.site_metric not in ("map50_95", "f1"):
            raise ConfigError(f"adapt site_metric {self.site_metric!r}: use map50_95 or f1")
        if self.patience < 1:
            raise ConfigError(f"adapt patience must be >= 1 epoch, got {self.patience}")
        if self.method not in (
            "auto",
            "hybrid",
            "logit",
            "ld",
            "feature",
            "cwd",
            "attention",
            "pseudo",
        ):
            raise ConfigError(f"adapt method {self.method!r} is not a distillation method or auto")
