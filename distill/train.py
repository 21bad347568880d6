"""One explicit training loop for teachers, scratch students and distillation.

A distillation run passes a :class:`distill.trainee.KDPlugin` (the
:class:`distill.distillation.Distiller`) that may replace targets (teacher pseudo-labels
on unlabelled frames) and adds KD terms; everything else
(assigner, losses, optimizer, schedule, EMA, bf16 autocast, clipping, checkpoints, resume,
DDP) is the same code for every kind of run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from distill import ddp
from distill.data.torch_dataset import DetectionDataset, collate
from distill.optim import lr_at, seed_everything
from distill.train_config import TrainConfig, bf16_enabled
from distill.trainee import EpochEnd, KDPlugin, SavePoint, Trainee, tensorboard_writer
from runtime.data.dataset import load_split
from runtime.data.records import DatasetSplit, Skipped
from runtime.data.verify import SKIP_REPORT, drop_undecodable, log_skipped, write_skip_report
from runtime.errors import ConfigError

log = logging.getLogger(__name__)


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
    "skip_bad",
    "aug",
    "bf16",
    "save_every",
)


def train(
    cfg: TrainConfig,
    data: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    distiller: KDPlugin | None = None,
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


def _check_shared(cfgs: list[TrainConfig], distillers: list[KDPlugin | None]) -> None:
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
    distillers: list[KDPlugin | None] | None = None,
    teacher_path: str = "",
    progress: bool = True,
    skipped: dict[str, tuple[Skipped, ...]] | None = None,
) -> list[Path]:
    """Train several models on the same batches in one loop; returns their model.pt paths.

    Each run is what :func:`train` would make of it alone (same initial weights, batches,
    schedule and checkpoints), but the batches are loaded, and with ``distillers`` the
    teacher runs, once per step for all of them: comparing distillation methods then costs
    one teacher pass instead of one per method. The first distiller prepares each batch
    (its unlabelled frames, pseudo-labels and teacher outputs, with features if any run
    needs them); the configs must agree on the keys in ``SHARED_KEYS``.
    ``skipped``: damaged inputs left out elsewhere (unlabelled frames), see :func:`load_data`.
    """
    distillers = list(distillers) if distillers is not None else [None] * len(cfgs)
    if not cfgs or len(cfgs) != len(out_dirs) or len(cfgs) != len(distillers):
        raise ValueError("train_many needs one out_dir and one distiller slot per config")
    _check_shared(cfgs, distillers)
    loop, val_split = _make_loop(cfgs, data, out_dirs, distillers, progress, skipped)
    loop.info = (val_split.class_names, data, teacher_path)
    if ddp.restarted() and not resume:
        if loop.rank == 0:
            log.warning("torchrun restarted the job (%d): resuming from last.pt", ddp.restarted())
        resume = True
    start = _resume(loop) if resume else _Start()
    for r in loop.runs:
        if loop.rank == 0:
            r.out_dir.mkdir(parents=True, exist_ok=True)
            r.writer = tensorboard_writer(r.out_dir)
    try:
        _run_epochs(loop, start, val_split)
    except Exception as e:
        if loop.world > 1 and ddp.is_peer_failure(e):
            raise ddp.peer_lost(e, loop.rank, loop.world, loop.where, str(out_dirs[0])) from e
        raise
    ddp.cleanup()
    for r in loop.runs:
        if r.writer is not None:
            r.writer.close()
    return [r.out_dir / "model.pt" for r in loop.runs]


def _run_epochs(loop: _Loop, start: _Start, val_split: DatasetSplit) -> None:
    """Train from ``start`` to the last epoch (or ``max_steps``), ending every epoch."""
    cfg0, step, batch = loop.cfg, start.step, start.batch
    names, data, teacher_path = loop.info
    t_start = time.perf_counter()
    for epoch in range(start.epoch, cfg0.epochs):
        step, n_images, n_batches, t0 = _train_epoch(loop, epoch, step, batch)
        n_images, seconds = ddp.sum_and_max(n_images, time.perf_counter() - t0)
        last_epoch = epoch + 1 == cfg0.epochs or bool(cfg0.max_steps and step >= cfg0.max_steps)
        end = EpochEnd(
            epoch=epoch,
            step=step,
            n_images=int(n_images),
            n_batches=batch + n_batches,
            t0=t0,
            t_start=t_start,
            last_epoch=last_epoch,
            rank=loop.rank,
            names=names,
            val_split=val_split,
            data=data,
            teacher_path=teacher_path,
            progress=loop.progress,
            seconds=seconds,
            world=loop.world,
            plugin=_plugin_state(loop.lead),
        )
        loop.where = f"the end of epoch {epoch + 1}"
        for r in loop.runs:
            r.end_epoch(end)
        batch = 0
        if last_epoch:
            break


def load_data(
    data: str | Path,
    cfg: TrainConfig,
    out_dirs: list[str | Path],
    rank: int,
    progress: bool,
    skipped: dict[str, tuple[Skipped, ...]] | None = None,
) -> tuple[DatasetSplit, DatasetSplit]:
    """The train split (``cfg.labelled_fraction`` of it) and the val split of ``data``.

    With ``cfg.skip_bad``, damaged images and label lines are left out when loading and
    every image is decoded once (in parallel) so that undecodable ones are left out too,
    before any training. Process 0 logs each once and writes the report (those and
    ``skipped``, e.g. unlabelled frames) to ``<out_dir>/skipped.json`` of every run.
    """
    train_split = load_split(data, "train", skip_bad=cfg.skip_bad)
    val_split = load_split(data, "val", skip_bad=cfg.skip_bad)
    if cfg.skip_bad:
        progress = progress and rank == 0
        train_split = drop_undecodable(train_split, True, progress)
        val_split = drop_undecodable(val_split, True, progress)
        found = {"train": train_split.skipped, "val": val_split.skipped, **(skipped or {})}
        if rank == 0:
            log_skipped(found)
        for out in out_dirs if rank == 0 else []:
            Path(out).mkdir(parents=True, exist_ok=True)
            report = write_skip_report(Path(out) / SKIP_REPORT, data, found)
            log.info("damaged inputs listed in %s", report)
    train_split, _ = subset_records(train_split, cfg.labelled_fraction, cfg.seed)
    return train_split, val_split


def training_dataset(split: DatasetSplit, cfg: TrainConfig) -> DetectionDataset:
    """The augmented training samples of ``split`` as ``cfg`` sets them up."""
    return DetectionDataset(
        split,
        cfg.img_size,
        augment=True,
        aug=cfg.aug,
        cache=cfg.cache,
        seed=cfg.seed,
        skip_bad=cfg.skip_bad,
    )


def _make_loop(
    cfgs: list[TrainConfig],
    data: str | Path,
    out_dirs: list[str | Path],
    distillers: list[KDPlugin | None],
    progress: bool,
    skipped: dict[str, tuple[Skipped, ...]] | None = None,
) -> tuple[_Loop, DatasetSplit]:
    """The loop's state (trainees with their initial weights, the training set, batch
    size, device, bf16) and the validation split."""
    cfg0 = cfgs[0]
    rank, world, device = ddp.setup()
    seed_everything(cfg0.seed + rank)
    train_split, val_split = load_data(data, cfg0, out_dirs, rank, progress, skipped)
    runs = _trainees(cfgs, out_dirs, distillers, train_split.class_names, device, rank, world)
    dataset = training_dataset(train_split, cfg0)
    batch = _batch_size(cfg0, distillers, len(dataset))
    loop = _Loop(
        cfg=cfg0,
        runs=runs,
        lead=distillers[0],
        dataset=dataset,
        batch=batch,
        steps_per_epoch=max(1, len(dataset) // (batch * world)),
        device=device,
        rank=rank,
        world=world,
        progress=progress,
        use_bf16=bf16_enabled(cfg0.bf16, device),
    )
    return loop, val_split


def _trainees(
    cfgs: list[TrainConfig],
    out_dirs: list[str | Path],
    distillers: list[KDPlugin | None],
    names: tuple[str, ...],
    device: torch.device,
    rank: int,
    world: int,
) -> list[Trainee]:
    """One trainee per config; runs trained together tag their log lines, and the first
    distiller's teacher pass computes features when any run needs them."""
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
    return runs


def _batch_size(cfg: TrainConfig, distillers: list[KDPlugin | None], n_images: int) -> int:
    """Labelled images per batch: ``cfg.batch_size``, less the unlabelled frames that fill
    the rest of a distillation batch; at most the ``n_images`` of the training set."""
    if distillers[0] is None:
        return min(cfg.batch_size, n_images)
    sizes = {d.labelled_batch_size(cfg.batch_size) for d in distillers}
    if len(sizes) > 1:
        raise ConfigError("runs trained together must share kd.unlabelled_ratio")
    return min(sizes.pop(), n_images)


@dataclass(frozen=True)
class _Start:
    """Where a run starts: epoch ``epoch`` (0-based) from its batch ``batch``, at
    optimizer step ``step``."""

    epoch: int = 0
    step: int = 0
    batch: int = 0


def _plugin_state(plugin: KDPlugin | None) -> dict[str, Any]:
    """The lead plugin's state for last.pt (a KDPlugin without ``state_dict``: none)."""
    return plugin.state_dict() if hasattr(plugin, "state_dict") else {}


def _resume(loop: _Loop) -> _Start:
    """Load every run's last.pt and return where they stopped (the start when none has
    one). With the processes that wrote it the run continues exactly: position, RNG
    states, frame stream and loss sums. With another number of processes the global
    batch and each process's share differ: it restarts the epoch it was in (the weights
    keep what they learnt) and says so."""
    states = [r.resume() for r in loop.runs]
    reached = {(s["epoch"], s.get("batch", 0), s["step"]) if s else None for s in states}
    if len(reached) > 1:
        raise ConfigError(
            f"runs trained together stopped at different points {sorted(map(str, reached))}"
            "; resume them one by one"
        )
    state = states[0]
    if state is None:
        return _Start()
    epoch, batch, step = int(state["epoch"]), int(state.get("batch", 0)), int(state["step"])
    if loop.lead is not None and hasattr(loop.lead, "load_state_dict"):
        loop.lead.load_state_dict(state.get("plugin", {}))
    saved_world = int(state.get("world", loop.world))
    if saved_world != loop.world:
        if loop.rank == 0:
            log.warning(
                "%s/last.pt was written by %d process(es) and this run has %d: the global "
                "batch and each process's share of the data differ, so the run resumes at "
                "the start of epoch %d, not exactly where it stopped (batch %d); resume "
                "with %d processes to continue exactly",
                loop.runs[0].out_dir,
                saved_world,
                loop.world,
                epoch + 1,
                batch,
                saved_world,
            )
        return _Start(epoch, epoch * loop.steps_per_epoch, 0)
    ranks = state.get("ranks") or []
    if len(ranks) == loop.world:
        for r, s in zip(loop.runs, states):
            r.restore_rank(s["ranks"][loop.rank])
    return _Start(epoch, step, batch)


@dataclass
class _Loop:
    """What every epoch of :func:`train_many` works with."""

    cfg: TrainConfig  # the first run's (the SHARED_KEYS are the same in all)
    runs: list[Trainee]
    lead: KDPlugin | None  # prepares every batch for all runs
    dataset: DetectionDataset
    batch: int  # labelled images per batch and process
    steps_per_epoch: int
    device: torch.device
    rank: int
    world: int
    progress: bool  # progress bars (else a log line every 50 batches)
    use_bf16: bool  # bf16 autocast for the students' forward passes
    info: tuple = ((), "", "")  # (class names, data, teacher path) for the checkpoints
    where: str = "the start"  # the step being trained, for error messages

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs

    @property
    def desc(self) -> str:
        """The progress bar's name: the model, or how many runs train together."""
        return self.runs[0].cfg.arch_name if len(self.runs) == 1 else f"{len(self.runs)} runs"


def _train_epoch(
    loop: _Loop, epoch: int, step: int, start_batch: int = 0
) -> tuple[int, int, int, float]:
    """Train every run for one epoch from its batch ``start_batch`` (or until
    ``cfg.max_steps``), writing last.pt every ``cfg.save_every`` steps; returns (optimizer
    steps so far, images this process trained on, batches trained here (>= 1), the
    ``time.perf_counter()`` at which the first batch was asked for)."""
    cfg, runs, rank = loop.cfg, loop.runs, loop.rank
    loop.dataset.set_epoch(epoch)
    if epoch >= cfg.epochs - cfg.close_mosaic:
        loop.dataset.aug = replace(cfg.aug, mosaic=0.0)
    loader = ddp.loader(
        loop.dataset,
        loop.batch,
        collate,
        cfg.workers,
        cfg.seed,
        rank,
        loop.world,
        epoch,
        start_batch,
    )
    for r in runs:
        r.net.train()
        if not start_batch:  # else: the sums restored from last.pt
            r.sums = {}
    n_images, n_batches, t0 = 0, 0, time.perf_counter()
    bar = tqdm(
        loader,
        initial=start_batch,
        total=loop.steps_per_epoch,
        desc=f"{loop.desc} {epoch + 1}/{cfg.epochs}",
        disable=not loop.progress or rank != 0,
        leave=False,
        dynamic_ncols=True,
    )
    for batch_data in bar:
        if loop.lead is not None:
            images, targets, context = loop.lead.prepare(batch_data)
        else:
            images, targets, context = batch_data[0], batch_data[1], None
        images, targets = images.to(loop.device, non_blocking=True), targets.to(loop.device)
        where = loop.where = f"epoch {epoch + 1} step {step}"
        for r in runs:
            c = r.cfg
            warmup = int(c.warmup_epochs * loop.steps_per_epoch)
            lr = lr_at(step, loop.total_steps, warmup, c.lr, c.min_lr_ratio)
            r.step(images, targets, context, lr, loop.use_bf16, loop.world, where)
        step += 1
        n_batches += 1
        n_images += images.shape[0]
        ips = n_images * loop.world / (time.perf_counter() - t0)
        shown = runs[0].logs if len(runs) == 1 else {}
        bar.set_postfix(
            {
                **{k: f"{v:.3f}" for k, v in shown.items()},
                "lr": f"{runs[0].lr:.2e}",
                "img/s": f"{ips:.1f}",
            }
        )
        if not loop.progress and rank == 0 and n_batches % 50 == 0:  # background: a log line
            _log_progress(runs, epoch, n_batches, loop.steps_per_epoch, ips)
        if cfg.max_steps and step >= cfg.max_steps:
            break
        if cfg.save_every and step % cfg.save_every == 0 and n_batches < len(loader):
            _save_mid_epoch(loop, epoch, start_batch + n_batches, step)
    bar.close()
    return step, n_images, max(1, n_batches), t0


def _save_mid_epoch(loop: _Loop, epoch: int, batch: int, step: int) -> None:
    """Write every run's last.pt in the middle of ``epoch`` (after its ``batch`` batches)."""
    point = SavePoint(epoch, batch, step, loop.world, _plugin_state(loop.lead))
    loop.where = f"a checkpoint at epoch {epoch + 1} step {step}"
    for r in loop.runs:
        r.save_mid_epoch(point, loop.rank, *loop.info)


def _log_progress(
    runs: list[Trainee], epoch: int, n_batches: int, per_epoch: int, ips: float
) -> None:
    """One log line per run: epoch, batch, the last step's losses and the speed."""
    for r in runs:
        log.info(
            "%sepoch %d step %d/%d %s img/s %.1f",
            r.tag,
            epoch + 1,
            n_batches,
            per_epoch,
            " ".join(f"{k}={v:.3f}" for k, v in r.logs.items()),
            ips,
        )


@dataclass(frozen=True)
class StepTiming:
    """What :func:`measure_steps` measured."""

    seconds_per_step: float  # one optimizer step, its batch's loading included
    steps_per_epoch: int  # optimizer steps in one epoch of this config
    warmup_seconds: float  # set-up and the warm-up steps, before the timed ones


def measure_steps(
    cfg: TrainConfig,
    data: str | Path,
    *,
    distiller: KDPlugin | None = None,
    steps: int = 3,
    warmup: int = 1,
) -> StepTiming:
    """Time ``steps`` real optimizer steps of ``train(cfg, data, distiller=...)`` after
    ``warmup`` steps: the same loop, batches, augmentation, teacher pass and bf16 mode as
    the run will have (epoch 1's batches, ``cfg.epochs`` deciding the mosaic). Writes
    nothing; the weights trained here are thrown away."""
    t_start = time.perf_counter()
    cfg = replace(cfg, max_steps=0, save_every=0)
    loop, _ = _make_loop([cfg], data, [Path("unused")], [distiller], progress=False)
    setup_s = time.perf_counter() - t_start
    warmup_s, per_step = _time_steps(loop, cfg, warmup, steps)
    return StepTiming(per_step, loop.steps_per_epoch, setup_s + warmup_s)


def _time_steps(loop: _Loop, cfg: TrainConfig, warmup: int, steps: int) -> tuple[float, float]:
    """(seconds of ``warmup`` steps, seconds per step of the ``steps`` after them); the
    timed pass ends early with the epoch (its steps are counted)."""
    t0 = time.perf_counter()
    loop.cfg = replace(cfg, max_steps=warmup)
    _train_epoch(loop, 0, 0)
    _synchronize(loop.device)
    t1 = time.perf_counter()
    loop.cfg = replace(cfg, max_steps=warmup + steps)
    _, _, n_batches, _ = _train_epoch(loop, 0, warmup)
    _synchronize(loop.device)
    return t1 - t0, (time.perf_counter() - t1) / n_batches


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
