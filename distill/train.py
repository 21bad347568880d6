"""One explicit training loop for teachers, scratch students and distillation.

A distillation run passes a ``Distiller`` (see :mod:`distill.distillation`) that may replace
targets (teacher pseudo-labels on unlabelled frames) and adds KD terms; everything else
(assigner, losses, optimizer, schedule, EMA, bf16 autocast, clipping, checkpoints, resume,
DDP) is the same code for every kind of run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from distill import ddp
from distill.checkpoint import make_checkpoint, read_checkpoint, save_atomic
from distill.config import to_dict
from distill.data.dataset import load_split
from distill.data.torch_dataset import DetectionDataset, collate
from distill.data.transforms import AugmentConfig
from distill.losses.assigner import Assignment
from distill.losses.detection import LossWeights, detection_loss
from distill.models.detector import Detector
from distill.models.head import HeadOutput
from distill.models.presets import PRESETS, Scale, build_detector
from distill.optim import ModelEMA, build_optimizer, lr_at, seed_everything
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
    out_dir = Path(out_dir)
    rank, world, device = ddp.setup()
    seed_everything(cfg.seed + rank)
    train_split, _ = subset_records(load_split(data, "train"), cfg.labelled_fraction, cfg.seed)
    val_split = load_split(data, "val")
    names = train_split.class_names
    scale = cfg.scale()
    model: Detector = build_detector(scale, len(names)).to(device)
    model.head.reset_bias(cfg.img_size)
    extra_modules = [m.to(device) for m in distiller.trainable_modules()] if distiller else []
    params = list(model.named_parameters())
    for i, m in enumerate(extra_modules):
        params += [(f"kd{i}.{n}", p) for n, p in m.named_parameters()]
    optimizer = build_optimizer(params, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    ema = ModelEMA(model, cfg.ema_decay, cfg.ema_tau)

    dataset = DetectionDataset(
        train_split, cfg.img_size, augment=True, aug=cfg.aug, cache=cfg.cache, seed=cfg.seed
    )
    batch = min(cfg.batch_size, len(dataset))
    if distiller is not None:  # unlabelled frames fill the rest of each batch
        batch = min(distiller.labelled_batch_size(cfg.batch_size), len(dataset))
    steps_per_epoch = max(1, len(dataset) // (batch * world))
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    start_epoch, step, metrics = 0, 0, {}
    last_path = out_dir / "last.pt"
    if resume and last_path.exists():
        ckpt = read_checkpoint(last_path)
        state = ckpt["train_state"]
        model.load_state_dict(state["model_raw"])
        ema.module.load_state_dict(ckpt["model"])
        ema.updates = int(state["ema_updates"])
        optimizer.load_state_dict(state["optimizer"])
        for m, sd in zip(extra_modules, state.get("extra_modules", [])):
            m.load_state_dict(sd)
        start_epoch, step = int(state["epoch"]), int(state["step"])
        metrics = ckpt.get("metrics", {})
        log.info("resuming %s at epoch %d (step %d)", last_path, start_epoch, step)
    elif resume:
        log.info("--resume: no %s yet, starting fresh", last_path)

    train_model = ddp.wrap(model, device) if world > 1 else model
    use_bf16 = bf16_enabled(cfg.bf16, device)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    log_file = out_dir / "metrics.jsonl"
    writer = _tensorboard(out_dir) if rank == 0 else None
    config_dict = to_dict(cfg)
    t_start = time.perf_counter()

    for epoch in range(start_epoch, cfg.epochs):
        dataset.set_epoch(epoch)
        if epoch >= cfg.epochs - cfg.close_mosaic:
            dataset.aug = replace(cfg.aug, mosaic=0.0)
        loader = ddp.loader(dataset, batch, collate, cfg.workers, cfg.seed + epoch, rank, world)
        train_model.train()
        sums: dict[str, float] = {}
        n_images, n_batches, t0 = 0, 0, time.perf_counter()
        bar = tqdm(
            loader,
            total=steps_per_epoch,
            desc=f"{cfg.arch_name} {epoch + 1}/{cfg.epochs}",
            disable=not progress or rank != 0,
            leave=False,
            dynamic_ncols=True,
        )
        for batch_data in bar:
            if distiller is not None:
                images, targets, context = distiller.prepare(batch_data)
            else:
                images, targets, context = batch_data[0], batch_data[1], None
            images, targets = images.to(device, non_blocking=True), targets.to(device)
            lr = lr_at(step, total_steps, warmup, cfg.lr, cfg.min_lr_ratio)
            for g in optimizer.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                if distiller is not None and distiller.needs_features:
                    out, feats = train_model(images, return_features=True)
                else:
                    out, feats = train_model(images), None
            loss, logs, assignment = detection_loss(out, targets, model.strides, cfg.loss)
            if distiller is not None:
                kd_loss, kd_logs = distiller.loss(context, out, feats, assignment)
                loss = loss + kd_loss * images.shape[0]
                logs.update(kd_logs)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1} step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1 and extra_modules:  # adapters live outside DDP: average their grads
                ddp.average_gradients(extra_modules)
            nn.utils.clip_grad_norm_([p for _, p in params], cfg.grad_clip)
            optimizer.step()
            ema.update(model)
            step += 1
            n_batches += 1
            n_images += images.shape[0] * world
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            ips = n_images / (time.perf_counter() - t0)
            bar.set_postfix(
                {
                    **{k: f"{v:.3f}" for k, v in logs.items()},
                    "lr": f"{lr:.2e}",
                    "img/s": f"{ips:.1f}",
                }
            )
            if not progress and rank == 0 and n_batches % 50 == 0:  # background runs: a log line
                log.info(
                    "epoch %d step %d/%d %s img/s %.1f",
                    epoch + 1,
                    n_batches,
                    steps_per_epoch,
                    " ".join(f"{k}={v:.3f}" for k, v in logs.items()),
                    ips,
                )
            if cfg.max_steps and step >= cfg.max_steps:
                break
        bar.close()
        n_batches = max(1, n_batches)
        record = {
            "epoch": epoch + 1,
            "step": step,
            "lr": lr,
            "images_per_s": round(n_images / (time.perf_counter() - t0), 2),
            "wall_seconds": round(time.perf_counter() - t_start, 1),
            **{f"loss_{k}": round(v / n_batches, 5) for k, v in sums.items()},
        }
        last_epoch = epoch + 1 == cfg.epochs or bool(cfg.max_steps and step >= cfg.max_steps)
        if rank == 0 and (last_epoch or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
            from distill.evaluate import evaluate_model

            result = evaluate_model(ema.module, val_split, cfg.img_size, progress=progress)
            record.update(map50_95=result.map50_95, map50=result.map50)
            metrics = {"map50_95": result.map50_95, "map50": result.map50, "epoch": epoch + 1}
        if rank == 0:
            with log_file.open("a") as f:
                f.write(json.dumps(record) + "\n")
            if writer is not None:
                for k, v in record.items():
                    if isinstance(v, (int, float)) and k != "epoch":
                        writer.add_scalar(k, v, epoch + 1)
            log.info("epoch %s", json.dumps(record))
            train_state = {
                "model_raw": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "step": step,
                "ema_updates": ema.updates,
                "extra_modules": [m.state_dict() for m in extra_modules],
            }
            common = dict(
                preset=cfg.arch_name,
                scale=scale,
                class_names=names,
                img_size=cfg.img_size,
                config=config_dict,
                metrics=metrics,
                teacher=teacher_path,
                data=str(data),
            )
            save_atomic(make_checkpoint(ema.module, train_state=train_state, **common), last_path)
            if last_epoch:
                metrics["train_seconds"] = round(time.perf_counter() - t_start, 1)
                save_atomic(make_checkpoint(ema.module, **common), out_dir / "model.pt")
        if last_epoch:
            break
    ddp.cleanup()
    if writer is not None:
        writer.close()
    return out_dir / "model.pt"


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: JSON lines only
        return None
    return SummaryWriter(str(out_dir / "tb"))
