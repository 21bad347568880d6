"""One model being trained by :func:`distill.train.train_many`: its weights, EMA,
optimizer, KD modules (adapters), logs and checkpoints. Several trainees can share the
batches (and the teacher's pass) of one training loop.

A distillation run plugs a :class:`KDPlugin` into the loop (the teacher's side, e.g.
:class:`distill.distillation.Distiller`); at each epoch's end the loop hands every
trainee one :class:`EpochEnd` record."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from distill import ddp
from distill.checkpoint import (
    make_checkpoint,
    read_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
)
from distill.config import to_dict
from distill.finetune import freeze_blocks, load_initial_weights
from distill.losses.assigner import Assignment
from distill.losses.detection import detection_loss
from distill.models.detector import Detector
from distill.models.head import HeadOutput
from distill.models.presets import build_detector
from distill.optim import ModelEMA, build_optimizer, seed_everything
from distill.train_config import TrainConfig

log = logging.getLogger("distill.train")  # the training loop's log lines


class KDPlugin(Protocol):
    """What a distillation method plugs into the training loop: it prepares each batch
    (the first run's plugin, for all runs) and adds its KD terms to each run's loss."""

    needs_features: bool

    def trainable_modules(self) -> list[nn.Module]:
        """Modules trained with the student (e.g. feature adapters)."""
        ...

    def labelled_batch_size(self, batch_size: int) -> int:
        """How many of a batch of ``batch_size`` come from the labelled set."""
        ...

    def prepare(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(images, targets (M,6), context) for this batch (e.g. pseudo-labels added)."""
        ...

    def loss(
        self,
        context: Any,
        out: HeadOutput,
        feats: dict[str, torch.Tensor] | None,
        assignment: Assignment,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """(KD loss per image, its terms for the log) for the student's outputs."""
        ...


@dataclass(frozen=True)
class EpochEnd:
    """What the loop tells each trainee when an epoch ends (:meth:`Trainee.end_epoch`)."""

    epoch: int  # 0-based index of the epoch that ended
    step: int  # optimizer steps so far, all epochs
    n_images: int  # images trained on in this epoch, all processes
    n_batches: int  # batches in this epoch (>= 1)
    t0: float  # time.perf_counter() at the epoch's start
    t_start: float  # time.perf_counter() at the run's start
    last_epoch: bool  # the run ends here: evaluate and write model.pt
    rank: int  # this process (only rank 0 evaluates and writes)
    names: tuple[str, ...]  # class names
    val_split: Any  # load_split(data, "val"): evaluated at the end and every cfg.eval_every
    data: str | Path  # the dataset, for the checkpoint
    teacher_path: str  # the teacher, for the checkpoint ("" when none)
    progress: bool  # progress bars while evaluating
    seconds: float = 0.0  # this epoch's training time, the slowest process's (0: from t0)
    world: int = 1  # processes
    plugin: dict[str, Any] = field(default_factory=dict)  # the lead KDPlugin's state_dict

    def point(self) -> SavePoint:
        """Where a run resumed from this epoch's end starts: the next epoch."""
        return SavePoint(self.epoch + 1, 0, self.step, self.world, self.plugin)


@dataclass(frozen=True)
class SavePoint:
    """The position a ``last.pt`` records: a resumed run trains epoch ``epoch`` (0-based)
    from its batch ``batch`` (0 at an epoch's end) at optimizer step ``step``."""

    epoch: int
    batch: int
    step: int
    world: int  # processes that trained up to here
    plugin: dict[str, Any]  # the lead KDPlugin's state_dict (frame stream position)


class Trainee:
    """One model being trained: its weights, EMA, optimizer, KD modules and logs."""

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: Path,
        distiller: KDPlugin | None,
        names: tuple[str, ...],
        device: torch.device,
        rank: int,
        world: int,
    ) -> None:
        self.cfg, self.out_dir, self.distiller = cfg, out_dir, distiller
        self.scale = cfg.scale()
        seed_everything(cfg.seed)  # the same initial weights in every process, as alone
        self.model: Detector = build_detector(self.scale, len(names)).to(device)
        self.model.head.reset_bias(cfg.img_size)
        if cfg.init:  # fine-tuning: start from a checkpoint, early blocks frozen
            load_initial_weights(self.model, cfg.init, names)
        freeze_blocks(self.model, cfg.freeze)
        self.extra = [m.to(device) for m in distiller.trainable_modules()] if distiller else []
        self.params = list(self.model.named_parameters())
        for i, m in enumerate(self.extra):
            self.params += [(f"kd{i}.{n}", p) for n, p in m.named_parameters()]
        self.optimizer = build_optimizer(
            self.params, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum
        )
        self.ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_tau)
        self.net = ddp.wrap(self.model, device) if world > 1 else self.model
        self.needs_features = bool(distiller is not None and distiller.needs_features)
        self.tag = ""  # "<out_dir name>: " in the log lines of runs trained together
        self.metrics: dict = {}
        self.sums: dict[str, float] = {}
        self.logs: dict[str, float] = {}
        self.lr = 0.0  # of the last step
        self.writer = None

    def resume(self) -> dict[str, Any] | None:
        """Load ``last.pt`` if there is one and return its ``train_state`` (the position
        reached: ``epoch``, ``batch``, ``step``; ``world``, ``ranks``, ``plugin``), else
        None. The caller decides what of the position and per-process states to use."""
        last = self.out_dir / "last.pt"
        if not last.exists():
            log.info("--resume: no %s yet, starting fresh", last)
            return None
        ckpt = read_checkpoint(last)
        state = ckpt["train_state"]
        self.model.load_state_dict(state["model_raw"])
        self.ema.module.load_state_dict(ckpt["model"])
        self.ema.updates = int(state["ema_updates"])
        self.optimizer.load_state_dict(state["optimizer"])
        for m, sd in zip(self.extra, state.get("extra_modules", [])):
            m.load_state_dict(sd)
        self.metrics = ckpt.get("metrics", {})
        log.info(
            "resuming %s at epoch %d batch %d (step %d)",
            last,
            int(state["epoch"]) + 1,
            int(state.get("batch", 0)),
            int(state["step"]),
        )
        return state

    def restore_rank(self, state: dict[str, Any]) -> None:
        """Continue this process exactly: its RNG states and the epoch's loss sums so far
        (one entry of a ``train_state``'s ``ranks``)."""
        set_rng_state(state["rng"])
        self.sums = dict(state.get("sums", {}))

    def step(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        context: Any,
        lr: float,
        use_bf16: bool,
        world: int,
        where: str,
    ) -> None:
        """One optimizer step on a batch (teacher context shared with the other runs)."""
        self.lr = lr
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        d = self.distiller
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            if self.needs_features:
                out, feats = self.net(images, return_features=True)
            else:
                out, feats = self.net(images), None
        with ddp.global_step(world):  # under DDP: the global batch's loss (see distill.ddp)
            loss, logs, assignment = detection_loss(out, targets, self.model.strides, self.cfg.loss)
            if d is not None:
                kd_loss, kd_logs = d.loss(context, out, feats, assignment)
                loss = loss + kd_loss * images.shape[0]
                logs.update(kd_logs)
        loss = loss * world  # x the global batch; DDP averages the processes' gradients
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"{self.out_dir}: loss is {loss.item()} at {where}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1 and self.extra:  # adapters live outside DDP: average their grads
            ddp.average_gradients(self.extra)
        nn.utils.clip_grad_norm_([p for _, p in self.params], self.cfg.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.logs = logs
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def end_epoch(self, end: EpochEnd) -> None:
        """Log the epoch (losses averaged over the processes), evaluate when due, and
        write last.pt (and model.pt at the end) on process 0 while the others wait."""
        sums = ddp.mean_over_ranks(self.sums)
        ranks = ddp.gather(self.rank_state())
        if end.rank == 0:
            self._finish_epoch(end, sums, ranks)
        ddp.barrier()

    def _finish_epoch(self, end: EpochEnd, sums: dict[str, float], ranks: list) -> None:
        """Process 0's part of :meth:`end_epoch`."""
        cfg, epoch, last_epoch = self.cfg, end.epoch, end.last_epoch
        seconds = end.seconds or time.perf_counter() - end.t0
        record = {
            "epoch": epoch + 1,
            "step": end.step,
            "lr": self.lr,
            "images_per_s": round(end.n_images / max(seconds, 1e-9), 2),
            "images": end.n_images,
            "epoch_seconds": round(seconds, 2),
            "wall_seconds": round(time.perf_counter() - end.t_start, 1),
            **{f"loss_{k}": round(v / end.n_batches, 5) for k, v in sums.items()},
        }
        if end.world > 1:
            record["processes"] = end.world
        if last_epoch or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
            from distill.evaluate import evaluate_model

            result = evaluate_model(
                self.ema.module, end.val_split, cfg.img_size, progress=end.progress
            )
            record.update(map50_95=result.map50_95, map50=result.map50)
            self.metrics = {"map50_95": result.map50_95, "map50": result.map50, "epoch": epoch + 1}
        with (self.out_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.writer.add_scalar(k, v, epoch + 1)
        log.info("%sepoch %s", self.tag, json.dumps(record))
        common = self._checkpoint_fields(end.names, end.data, end.teacher_path)
        self.save_last(end.point(), ranks, common)
        if last_epoch:
            self.metrics["train_seconds"] = round(time.perf_counter() - end.t_start, 1)
            save_atomic(make_checkpoint(self.ema.module, **common), self.out_dir / "model.pt")

    def rank_state(self) -> dict[str, Any]:
        """This process's part of an exact resume: RNG states and the epoch's loss sums."""
        return {"rng": rng_state(), "sums": dict(self.sums)}

    def train_state(self, point: SavePoint, ranks: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything ``--resume`` restores (see :mod:`distill.checkpoint`); ``ranks``:
        every process's :meth:`rank_state`, in rank order."""
        return {
            "model_raw": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "epoch": point.epoch,
            "batch": point.batch,
            "step": point.step,
            "ema_updates": self.ema.updates,
            "extra_modules": [m.state_dict() for m in self.extra],
            "world": point.world,
            "ranks": ranks,
            "plugin": point.plugin,
        }

    def _checkpoint_fields(
        self, names: tuple[str, ...], data: str | Path, teacher_path: str
    ) -> dict[str, Any]:
        cfg = self.cfg
        return dict(
            preset=cfg.arch_name,
            scale=self.scale,
            class_names=names,
            img_size=cfg.img_size,
            config=to_dict(cfg),
            metrics=self.metrics,
            teacher=teacher_path,
            data=str(data),
        )

    def save_last(self, point: SavePoint, ranks: list, common: dict[str, Any]) -> None:
        """Write ``last.pt`` at ``point`` (process 0 only; ``common``: the checkpoint's
        descriptive fields, see :meth:`_checkpoint_fields`)."""
        state = self.train_state(point, ranks)
        ckpt = make_checkpoint(self.ema.module, train_state=state, **common)
        save_atomic(ckpt, self.out_dir / "last.pt")

    def save_mid_epoch(
        self, point: SavePoint, rank: int, names: tuple[str, ...], data: str | Path, teacher: str
    ) -> None:
        """Every process calls it; process 0 writes ``last.pt`` at ``point`` (in the middle
        of an epoch) while the others wait."""
        ranks = ddp.gather(self.rank_state())
        if rank == 0:
            self.save_last(point, ranks, self._checkpoint_fields(names, data, teacher))
        ddp.barrier()


def tensorboard_writer(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: JSON lines only
        return None
    return SummaryWriter(str(out_dir / "tb"))
