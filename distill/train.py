"""One explicit training loop for teachers, scratch students and distillation.

A distillation run passes a ``Distiller`` (see :mod:`distill.distillation`) that may replace
targets (teacher pseudo-labels on unlabelled frames) and adds KD terms; everything else
(assigner, losses, optimizer, schedule, EMA, bf16 autocast, clipping, checkpoints, resume,
DDP) is the same code for every kind of run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from distill import ddp
from distill.data.torch_dataset import DetectionDataset, collate
from distill.data.transforms import AugmentConfig
from distill.losses.assigner import Assignment
from distill.losses.detection import LossWeights
from distill.models.head import HeadOutput
from distill.models.presets import PRESETS, Scale
from distill.optim import lr_at, seed_everything
from distill.trainee import Trainee, tensorboard_writer
from runtime.data.dataset import load_split
from runtime.errors import ConfigError

log = logging.getLogger(__name__)


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
    workers: int = 0
    cache: bool = True
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


class Distiller(Protocol):
    """What a distillation method plugs into the loop."""

    needs_features: bool

    def trainable_modules(self) -> list[nn.Module]: ...

    def prepare(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(images, targets (M,6), context) for this batch (e.g. pseudo-labels added)."""
        ...

    def loss(
        self,
        context: Any,
        out: HeadOutput,
        feats: dict[str, torch.Tensor] | None,
        assignment: Assignment,
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


def bf16_enabled(mode: str, device: torch.device) -> bool:
    if mode == "off":
        return False
    if mode == "on":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def subset_records(split, fraction: float, seed: int):
    """Deterministically keep ``fraction`` of a split's records (label-scarce runs)."""
    if fraction >= 1.0:
        return split, []
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(split.records), generator=g).tolist()
    k = max(1, round(len(order) * fraction))
    keep = sorted(order[:k])
    rest = sorted(order[k:])
    return replace(split, records=[split.records[i] for i in keep]), [
        split.records[i] for i in rest
    ]


# Keys that shape the batches or the forward pass: runs trained together (train_many)
# must agree on them.
SHARED_KEYS = (
    "img_size",
    "epochs",
    "batch_size",
    "seed",
    "labelled_fraction",
    "close_mosaic",
    "max_steps",
    "workers",
    "cache",
    "aug",
    "bf16",
)


def train(
    cfg: TrainConfig,
    data: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    distiller: Distiller | None = None,
    teacher_path: str = "",
    progress: bool = True,
) -> Path:
    """Train and write ``out_dir/model.pt`` (EMA weights) and ``out_dir/last.pt`` (resumable).

    Returns the path of model.pt. ``data`` is any dataset accepted by ``load_split``.
    """
    return train_many(
        [cfg],
        data,
        [out_dir],
        resume=resume,
        distillers=[distiller],
        teacher_path=teacher_path,
        progress=progress,
    )[0]


def _check_shared(cfgs: list[TrainConfig], distillers: list[Distiller | None]) -> None:
    first = cfgs[0]
    for cfg in cfgs[1:]:
        diff = [k for k in SHARED_KEYS if getattr(cfg, k) != getattr(first, k)]
        if diff:
            raise ConfigError(f"runs trained together must share {', '.join(diff)}")
    if len({d is None for d in distillers}) > 1:
        raise ConfigError("runs trained together are all distilled or all trained alone")


def train_many(
    cfgs: list[TrainConfig],
    data: str | Path,
    out_dirs: list[str | Path],
    *,
    resume: bool = False,
    distillers: list[Distiller | None] | None = None,
    teacher_path: str = "",
    progress: bool = True,
) -> list[Path]:
    """Train several models on the same batches in one loop; returns their model.pt paths.

    Each run is what :func:`train` would make of it alone (same initial weights, batches,
    schedule and checkpoints), but the batches are loaded, and with ``distillers`` the
    teacher runs, once per step for all of them: comparing distillation methods then costs
    one teacher pass instead of one per method. The first distiller prepares each batch
    (its unlabelled frames, pseudo-labels and teacher outputs, with features if any run
    needs them); the configs must agree on the keys in ``SHARED_KEYS``.
    """
    distillers = list(distillers) if distillers is not None else [None] * len(cfgs)
    if not cfgs or len(cfgs) != len(out_dirs) or len(cfgs) != len(distillers):
        raise ValueError("train_many needs one out_dir and one distiller slot per config")
    _check_shared(cfgs, distillers)
    cfg0 = cfgs[0]
    rank, world, device = ddp.setup()
    seed_everything(cfg0.seed + rank)
    train_split, _ = subset_records(load_split(data, "train"), cfg0.labelled_fraction, cfg0.seed)
    val_split = load_split(data, "val")
    names = train_split.class_names
    runs = [
        Trainee(cfg, Path(out), d, names, device, rank, world)
        for cfg, out, d in zip(cfgs, out_dirs, distillers)
    ]
    lead = distillers[0]
    if len(runs) > 1:
        for r in runs:
            r.tag = f"{r.out_dir.name}: "
        if lead is not None:  # one teacher pass serves every run
            lead.needs_features = any(r.needs_features for r in runs)

    dataset = DetectionDataset(
        train_split, cfg0.img_size, augment=True, aug=cfg0.aug, cache=cfg0.cache, seed=cfg0.seed
    )
    batch = min(cfg0.batch_size, len(dataset))
    if lead is not None:  # unlabelled frames fill the rest of each batch
        sizes = {d.labelled_batch_size(cfg0.batch_size) for d in distillers}
        if len(sizes) > 1:
            raise ConfigError("runs trained together must share kd.unlabelled_ratio")
        batch = min(sizes.pop(), len(dataset))
    steps_per_epoch = max(1, len(dataset) // (batch * world))
    total_steps = steps_per_epoch * cfg0.epochs
    start_epoch, step = 0, 0
    if resume:
        reached = {r.resume() for r in runs}
        if len(reached) > 1:
            raise ConfigError(
                f"runs trained together stopped at different points {sorted(map(str, reached))}"
                "; resume them one by one"
            )
        start_epoch, step = reached.pop() or (0, 0)

    use_bf16 = bf16_enabled(cfg0.bf16, device)
    for r in runs:
        if rank == 0:
            r.out_dir.mkdir(parents=True, exist_ok=True)
            r.writer = tensorboard_writer(r.out_dir)
    t_start = time.perf_counter()
    desc = runs[0].cfg.arch_name if len(runs) == 1 else f"{len(runs)} runs"

    for epoch in range(start_epoch, cfg0.epochs):
        dataset.set_epoch(epoch)
        if epoch >= cfg0.epochs - cfg0.close_mosaic:
            dataset.aug = replace(cfg0.aug, mosaic=0.0)
        loader = ddp.loader(dataset, batch, collate, cfg0.workers, cfg0.seed + epoch, rank, world)
        for r in runs:
            r.net.train()
            r.sums = {}
        n_images, n_batches, t0 = 0, 0, time.perf_counter()
        bar = tqdm(
            loader,
            total=steps_per_epoch,
            desc=f"{desc} {epoch + 1}/{cfg0.epochs}",
            disable=not progress or rank != 0,
            leave=False,
            dynamic_ncols=True,
        )
        for batch_data in bar:
            if lead is not None:
                images, targets, context = lead.prepare(batch_data)
            else:
                images, targets, context = batch_data[0], batch_data[1], None
            images, targets = images.to(device, non_blocking=True), targets.to(device)
            where = f"epoch {epoch + 1} step {step}"
            lrs = []
            for r in runs:
                c = r.cfg
                warmup = int(c.warmup_epochs * steps_per_epoch)
                lrs.append(lr_at(step, total_steps, warmup, c.lr, c.min_lr_ratio))
                r.step(images, targets, context, lrs[-1], use_bf16, world, where)
            step += 1
            n_batches += 1
            n_images += images.shape[0] * world
            ips = n_images / (time.perf_counter() - t0)
            shown = runs[0].logs if len(runs) == 1 else {}
            bar.set_postfix(
                {
                    **{k: f"{v:.3f}" for k, v in shown.items()},
                    "lr": f"{lrs[0]:.2e}",
                    "img/s": f"{ips:.1f}",
                }
            )
            if not progress and rank == 0 and n_batches % 50 == 0:  # background runs: a log line
                for r in runs:
                    log.info(
                        "%sepoch %d step %d/%d %s img/s %.1f",
                        r.tag,
                        epoch + 1,
                        n_batches,
                        steps_per_epoch,
                        " ".join(f"{k}={v:.3f}" for k, v in r.logs.items()),
                        ips,
                    )
            if cfg0.max_steps and step >= cfg0.max_steps:
                break
        bar.close()
        n_batches = max(1, n_batches)
        last_epoch = epoch + 1 == cfg0.epochs or bool(cfg0.max_steps and step >= cfg0.max_steps)
        for r, lr in zip(runs, lrs):
            r.end_epoch(
                epoch,
                step,
                lr,
                n_images,
                n_batches,
                t0,
                t_start,
                last_epoch,
                rank,
                names,
                val_split,
                data,
                teacher_path,
                progress,
            )
        if last_epoch:
            break
    ddp.cleanup()
    for r in runs:
        if r.writer is not None:
            r.writer.close()
    return [r.out_dir / "model.pt" for r in runs]
