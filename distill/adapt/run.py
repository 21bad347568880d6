"""The adaptation run: deployed student + teacher + original data + site frames ->
a site student, its scores and the gate's verdict (see docs/adapt.md).

1. Site frames are collected (:mod:`.sources`), split by time (:mod:`.split`) into
   train / stop / test parts and written as frame folders under ``OUT/site/``.
2. The teacher labels the stop and test frames once (the reference of the agreement).
3. The deployed student is scored: agreement on the test frames, COCO mAP on the original
   val split (and on labelled site frames when given).
4. Distillation continues from the deployed weights (``TrainConfig.init``, early blocks
   frozen, small LR, the deployed run's architecture, input size and augmentation): the
   one training loop of :func:`distill.distillation.distill`, with the site train frames as
   its ``unlabelled`` frames (teacher pseudo-labels + soft targets) mixed into batches of
   replayed original data. It runs one epoch at a time (``max_steps`` of one cosine
   schedule, resumed from ``last.pt``), and after each epoch the student is scored on the
   stop frames: the best epoch is kept, and training stops after ``patience`` epochs
   without a better one.
5. The best epoch is scored like the deployed student, the gate (:mod:`.gate`) decides,
   and ``OUT/student.pt`` is the student to deploy (the adapted one, or the deployed one
   again); ``OUT/adapted.pt`` is the adapted one in any case.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from distill.adapt.config import AdaptConfig
from distill.adapt.evaluate import SiteScore, site_score, teacher_reference
from distill.adapt.gate import decide
from distill.adapt.sources import SiteFrame, collect, materialise
from distill.adapt.split import SiteSplit, split_by_time
from distill.config import from_dict, to_dict
from distill.distillation import DistillConfig, KDConfig
from runtime.errors import ConfigError, ModelFileError
from runtime.files import ensure_writable, write_atomic

log = logging.getLogger(__name__)


def distill_config(
    info: dict[str, Any], cfg: AdaptConfig, deployed: str, teacher: str, teacher_layout: str | None
) -> DistillConfig:
    """The deployed run's training config (from its checkpoint), turned into the
    adaptation's: same architecture, input size, augmentation and loss weights; the
    adaptation's schedule, init, freeze and KD settings."""
    from distill.models.presets import PRESETS

    known = {f.name for f in fields(DistillConfig)} - {"kd"}
    saved = {k: v for k, v in dict(info.get("config") or {}).items() if k in known}
    try:
        base = from_dict(DistillConfig, saved, f"{deployed} (its training config)")
    except ConfigError:
        log.warning("%s: its training config does not load here; using defaults", deployed)
        base = DistillConfig()
    scale = info.get("scale") or {}
    preset = str(info.get("preset", ""))
    method = cfg.method
    if method == "auto":
        method = "hybrid" if Path(teacher).suffix.lower() == ".pt" else "logit"
    kd = replace(
        _saved_kd(info, deployed),
        method=method,
        unlabelled_ratio=cfg.site_ratio,
        pseudo_threshold=cfg.pseudo_threshold,
        teacher_layout=teacher_layout or "",
    )
    return replace(
        base,
        model=preset if preset in PRESETS else base.model,
        width=float(scale.get("width", base.width)),
        depth=float(scale.get("depth", base.depth)),
        max_channels=int(scale.get("max_channels", base.max_channels)),
        img_size=int(info.get("img_size", base.img_size)),
        epochs=cfg.epochs,
        lr=cfg.lr,
        warmup_epochs=cfg.warmup_epochs,
        close_mosaic=cfg.epochs,  # fine-tuning: no mosaic, as the deployed run ended
        batch_size=cfg.batch_size or base.batch_size,
        labelled_fraction=cfg.replay_fraction,
        seed=cfg.seed,
        bf16=cfg.bf16,
        workers=cfg.workers,
        eval_every=0,
        max_steps=0,
        init=str(deployed),
        freeze=cfg.freeze,
        kd=kd,
    )


def _saved_kd(info: dict[str, Any], deployed: str) -> KDConfig:
    """The deployed run's kd section (its KD weights and temperatures), when it was
    distilled and the section loads here; else the defaults."""
    saved = (info.get("config") or {}).get("kd")
    if not isinstance(saved, dict):
        return KDConfig()
    try:
        return from_dict(KDConfig, saved, f"{deployed} (its kd config)")
    except ConfigError:
        log.warning("%s: its kd config does not load here; using the default KD weights", deployed)
        return KDConfig()


def check_teacher(
    teacher: str,
    deployed: str,
    data: str,
    dcfg: DistillConfig,
    margin: float,
    force: bool,
    progress: bool,
) -> dict[str, Any]:
    """The teacher check before adapting (:func:`distill.teacher_check.check_teacher`): the
    teacher must lead the deployed student (the reference) on the original val split by
    ``margin`` mAP50-95 points. Prints its line; returns the verdict for the report.
    Raises ``TeacherNotAhead`` when it does not lead, unless ``force``."""
    from distill.teacher_check import check_teacher as run_check
    from runtime.data.dataset import load_split

    split = load_split(data, "val", skip_bad=dcfg.skip_bad)
    check = run_check(
        teacher,
        split,
        dcfg.img_size,
        reference=deployed,
        margin=margin,
        force=force,
        layout_file=dcfg.kd.teacher_layout or None,
        kind=dcfg.kd.teacher_kind,
        progress=progress,
    )
    print(check.message)
    return check.to_dict()


def steps_per_epoch(cfg: DistillConfig, data: str) -> int:
    """Optimizer steps in one epoch of ``cfg`` on ``data`` (one process): what
    :func:`distill.train.train_many` will run, so that epochs can run one at a time."""
    from distill.train import load_data

    train_split, _ = load_data(data, cfg, [], 0, False)
    n = len(train_split.records)
    return max(1, n // min(labelled_batch(cfg), n))


def labelled_batch(cfg: DistillConfig) -> int:
    """Images of the original data per step (the rest of the batch is site frames), as
    :meth:`distill.distillation.Distiller.labelled_batch_size` takes them."""
    site = max(1, round(cfg.batch_size * cfg.kd.unlabelled_ratio)) if cfg.kd.unlabelled_ratio else 0
    return max(1, cfg.batch_size - site)


class Scorer:
    """Scores students the same way: agreement on site frames, COCO mAP on the original
    val split and on labelled site frames (when given)."""

    def __init__(
        self,
        cfg: AdaptConfig,
        names: tuple[str, ...],
        img_size: int,
        data: str,
        site_labels: str | None,
        progress: bool,
    ) -> None:
        from runtime.data.dataset import load_split

        self.cfg, self.names, self.img_size, self.progress = cfg, names, img_size, progress
        self.val = load_split(data, "val")
        self.labelled = load_split(site_labels, "val") if site_labels else None
        self.references: dict[str, Any] = {}
        self.seconds: dict[str, float] = {}  # how long each part of full() took

    def label(self, teacher, part: str, folder: Path) -> None:
        """The teacher's reference detections on a site part (computed once)."""
        self.references[part] = (
            folder,
            teacher_reference(teacher, folder, self.img_size, self.names, self.cfg.score_threshold),
        )

    def site(self, model, part: str) -> SiteScore:
        folder, ref = self.references[part]
        c = self.cfg
        return site_score(
            model, folder, ref, self.img_size, self.names, c.score_threshold, c.iou_threshold
        )

    def full(self, model) -> dict[str, Any]:
        """Every score of ``model``; ``self.seconds`` keeps how long each part took
        ("site", "original", "labelled"), for the time budget."""
        from distill.evaluate import evaluate_model

        t0 = time.perf_counter()
        out: dict[str, Any] = {"site": self.site(model, "test").to_dict()}
        t1 = time.perf_counter()
        orig = evaluate_model(model, self.val, self.img_size, progress=self.progress)
        out["original"] = {"map50_95": orig.map50_95, "map50": orig.map50}
        t2 = time.perf_counter()
        if self.labelled is not None:
            lab = evaluate_model(model, self.labelled, self.img_size, progress=self.progress)
            out["site_labelled"] = {"map50_95": lab.map50_95, "map50": lab.map50}
        self.seconds = {"site": t1 - t0, "original": t2 - t1, "labelled": time.perf_counter() - t2}
        return out


def prepare_site(frames: Sequence[SiteFrame], cfg: AdaptConfig, out: Path) -> SiteSplit:
    """Split the collected site frames by time and write them into
    ``out/site/{train,stop,test}`` (this run's own folders ``out/site`` and ``out/train``
    are emptied first, so that no frame or step of an earlier run is mixed in)."""
    split = split_by_time(frames, cfg.test_share, cfg.stop_share, cfg.gap)
    for stale in (out / "site", out / "train"):
        if stale.exists():
            shutil.rmtree(stale)
    for part in ("train", "stop", "test"):
        if getattr(split, part):
            materialise(getattr(split, part), out / "site" / part)
    return split


def _copy(src: Path, dst: Path) -> Path:
    return write_atomic(dst, src.read_bytes())


def train_epochs(
    dcfg: DistillConfig,
    teacher: str,
    data: str,
    site_train: Path,
    out: Path,
    scorer: Scorer,
    start_metric: float | None,
    progress: bool,
) -> tuple[list[dict[str, Any]], int]:
    """Distil one epoch at a time into ``out/train`` with early stopping on the stop
    frames (see the module docstring); the best epoch is copied to ``out/adapted.pt``.
    Returns (one row per epoch, the best epoch)."""
    from distill.checkpoint import load_detector, read_checkpoint
    from distill.distillation import distill

    c = scorer.cfg
    run_dir = out / "train"
    spe = steps_per_epoch(dcfg, data)
    history: list[dict[str, Any]] = []
    best, best_epoch = -1.0, 0
    t0 = time.perf_counter()
    for epoch in range(1, dcfg.epochs + 1):
        run_cfg = replace(dcfg, max_steps=spe * epoch)
        if dcfg.labelled_fraction < 1:  # a share of the original data: a new draw each epoch
            run_cfg = replace(run_cfg, seed=dcfg.seed + epoch - 1)
        path = distill(run_cfg, teacher, data, str(run_dir), str(site_train), epoch > 1, progress)
        if epoch == 1:
            step = int(read_checkpoint(run_dir / "last.pt")["train_state"]["step"])
            if step != spe:
                raise RuntimeError(f"adapt: epoch 1 ran {step} steps, expected {spe}")
        model, info = load_detector(path)
        row: dict[str, Any] = {
            "epoch": epoch,
            "original_map50_95": info.get("metrics", {}).get("map50_95"),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if "stop" in scorer.references:
            s = scorer.site(model, "stop")
            row.update(stop_f1=s.f1, stop_map50_95=s.map50_95)
            metric = s.metric(c.site_metric)
        else:
            metric = float(epoch)  # no stop frames: the last epoch is the one kept
        history.append(row)
        log.info("adapt epoch %d: %s", epoch, row)
        if metric > best:
            best, best_epoch = metric, epoch
            _copy(path, out / "adapted.pt")
        elif epoch - best_epoch >= c.patience:
            log.info("adapt: no better stop-frame score for %d epochs; stopping", c.patience)
            break
    if start_metric is not None and start_metric >= best:
        log.info("adapt: no epoch beat the deployed student on the stop frames")
    return history, best_epoch


def adapt(
    deployed: str | Path,
    teacher: str | Path,
    data: str | Path,
    sources: Sequence[str | Path],
    out_dir: str | Path,
    cfg: AdaptConfig | None = None,
    *,
    site_labels: str | None = None,
    teacher_layout: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Adapt ``deployed`` to the site frames of ``sources`` (see the module docstring);
    writes ``out_dir/{student.pt, adapted.pt, report.json, report.md, report.png}`` and
    returns the report."""
    import torch

    from distill.adapt.report import write_report
    from distill.checkpoint import load_detector
    from distill.teachers import open_teacher

    cfg = cfg or AdaptConfig()
    t_start = time.perf_counter()
    deployed, teacher, data, out = str(deployed), str(teacher), str(data), Path(out_dir)
    model, info = load_detector(deployed)
    names = tuple(info["class_names"])
    dcfg = distill_config(info, cfg, deployed, teacher, teacher_layout)
    if not Path(teacher).is_file():
        raise ModelFileError(f"{teacher}: teacher not found")
    frames = collect(sources, cfg.video_stride)  # names a missing or empty source now
    checked = check_teacher(teacher, deployed, data, dcfg, cfg.teacher_margin, force, progress)
    ensure_writable(out / "report.json")
    scorer = Scorer(cfg, names, dcfg.img_size, data, site_labels, progress)  # loads the data
    split = prepare_site(frames, cfg, out)
    site = out / "site"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ref_teacher = open_teacher(teacher, names, device, False, teacher_layout)
    for part in ("stop", "test"):
        if getattr(split, part):
            scorer.label(ref_teacher, part, site / part)
    del ref_teacher
    before = scorer.full(model)
    t_stop = time.perf_counter()
    start = scorer.site(model, "stop").metric(cfg.site_metric) if split.stop else None
    t_stop = time.perf_counter() - t_stop
    budget = None
    if cfg.minutes > 0:
        left = cfg.minutes * 60 - (time.perf_counter() - t_start)
        dcfg, budget = fit_budget(dcfg, cfg, teacher, data, site / "train", left, scorer, t_stop)
    history, best_epoch = train_epochs(
        dcfg, teacher, data, site / "train", out, scorer, start, progress
    )
    adapted, _ = load_detector(out / "adapted.pt")
    after = scorer.full(adapted)
    report = _report(
        locals_for_report(deployed, teacher, data, sources, cfg, dcfg, split, checked),
        before,
        after,
        history,
        best_epoch,
        cfg,
        site_labels,
    )
    report["budget"] = budget.to_dict() if budget is not None else None
    chosen = out / "adapted.pt" if report["gate"]["replace"] else Path(deployed)
    _copy(chosen, out / "student.pt")
    report["student"] = {
        "path": str(out / "student.pt"),
        "is": "adapted" if report["gate"]["replace"] else "deployed",
    }
    report["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    write_report(report, out)
    return report


MEASURED_STEPS = 3  # timed steps of the adaptation's training, after a warm-up step


def fit_budget(
    dcfg: DistillConfig,
    cfg: AdaptConfig,
    teacher: str,
    data: str,
    site_train: Path,
    left: float,
    scorer: Scorer,
    stop_seconds: float,
):
    """Size the training to ``cfg.minutes`` (:mod:`distill.adapt.budget`): time a few real
    steps of it, then cut the replayed share (and if need be the epochs) so that what is
    left of the budget holds the epochs and the final scoring. Returns (the sized config,
    the plan)."""
    from distill.adapt import budget
    from distill.distillation import measure_distill_steps
    from runtime.data.dataset import load_split

    t0 = time.perf_counter()
    timing = measure_distill_steps(dcfg, teacher, data, str(site_train), steps=MEASURED_STEPS)
    measured = time.perf_counter() - t0  # the teacher, the data, a warm-up step, the steps
    n_replay = len(load_split(data, "train").records)
    costs = budget.Costs(
        left=left - (time.perf_counter() - t0),
        seconds_per_step=timing.seconds_per_step,
        setup=measured - MEASURED_STEPS * timing.seconds_per_step,
        epoch_scoring=scorer.seconds["original"] + stop_seconds,
        final_scoring=sum(scorer.seconds.values()),
    )
    p = budget.plan(
        cfg.minutes,
        costs,
        cfg.epochs,
        n_replay,
        labelled_batch(dcfg),
        cfg.replay_fraction,
    )
    print(budget.line(p))
    sized = replace(
        dcfg, epochs=p.epochs, close_mosaic=p.epochs, labelled_fraction=p.replay_fraction
    )
    return sized, p


def locals_for_report(
    deployed, teacher, data, sources, cfg, dcfg, split, checked
) -> dict[str, Any]:
    """The run's inputs and settings, for the report."""
    return {
        "deployed": deployed,
        "teacher": teacher,
        "data": data,
        "sources": [str(s) for s in sources],
        "config": asdict(cfg),
        "distill_config": to_dict(dcfg),
        "site_frames": {
            **split.counts(),
            "streams": len({f.stream for f in split.train + split.stop + split.test}),
        },
        "teacher_check": checked,
    }


def _report(base, before, after, history, best_epoch, cfg, site_labels) -> dict[str, Any]:
    epochs = base["distill_config"]["epochs"]  # as planned (a time budget may cut them)
    if site_labels:
        metric, site = (
            "labelled site mAP50-95",
            (before["site_labelled"]["map50_95"], after["site_labelled"]["map50_95"]),
        )
    else:
        key = cfg.site_metric
        metric = f"site agreement {key}"
        site = (before["site"][key], after["site"][key])
    gate = decide(
        site,
        (before["original"]["map50_95"], after["original"]["map50_95"]),
        min_gain=cfg.min_gain,
        max_drop=cfg.max_drop,
        site_metric=metric,
    )
    return {
        **base,
        "scores": {"deployed": before, "adapted": after},
        "history": history,
        "best_epoch": best_epoch,
        "stopped_early": bool(history) and history[-1]["epoch"] < epochs,
        "gate": gate.to_dict(),
    }
