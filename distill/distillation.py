"""Distillation: a :class:`Distiller` plugs a teacher into the one training loop.

Per batch it (1) adds unlabelled frames, (2) runs the teacher once (no grad, bf16 where
supported), (3) turns the teacher's confident detections on unlabelled frames into
pseudo-labels and, for the ``dense`` term, its detections on every image into dense
targets, and after the student's forward pass (4) computes the method's KD terms (see
:mod:`distill.losses.kd`, :mod:`distill.losses.dense_kd` and docs/distillation.md).
Which terms a teacher can give is its ``teaches()``; :func:`plan_terms` keeps those and
says which it dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from distill.losses.assigner import Assignment
from distill.losses.dense_kd import dense_kd, teacher_detections
from distill.losses.detection import LossWeights
from distill.losses.kd import (
    FeatureAdapters,
    attention_kd,
    boxes_to_level_masks,
    channel_wise_kd,
    feature_kd,
    hybrid_kd,
    localization_kd,
    logit_kd,
    scores_to_level_masks,
)
from distill.models.head import HeadOutput
from distill.train_config import TrainConfig, bf16_enabled
from runtime.errors import ConfigError, DataError

if TYPE_CHECKING:
    from distill.train import StepTiming

log = logging.getLogger(__name__)

METHODS = ("hybrid", "logit", "ld", "feature", "cwd", "attention", "dense", "pseudo")
TERMS = ("logit", "ld", "feature", "cwd", "attention", "dense")
FEATURE_TERMS = ("feature", "cwd", "attention")


@dataclass(frozen=True)
class KDWeights:
    """Weight of each KD term relative to the detection loss (per image)."""

    logit: float = 1.0
    ld: float = 1.0
    feature: float = 1.0
    cwd: float = 1.0
    attention: float = 1.0
    dense: float = 1.0


@dataclass(frozen=True)
class KDConfig:
    """Distillation knobs (the ``kd:`` section of a distillation config)."""

    method: str = "hybrid"
    hybrid: tuple[str, ...] = ("logit", "ld", "feature")  # terms of the hybrid method
    weights: KDWeights = field(default_factory=KDWeights)
    logit_temperature: float = 2.0
    ld_temperature: float = 10.0
    cwd_temperature: float = 1.0
    ld_min_score: float = 0.05  # LD on anchors whose teacher score exceeds this (weight = score)
    feature_mask: str = "gt"  # gt (boxes incl. pseudo-labels) | teacher (scores) | none (FitNet)
    mask_score_threshold: float = 0.3  # teacher-score mask threshold
    pseudo_threshold: float = 0.45  # teacher detections above this become pseudo-labels
    pseudo_iou: float = 0.6  # NMS IoU for pseudo-labels and dense-target detections
    dense_min_score: float = 0.1  # teacher detections above this (after NMS) are dense targets
    unlabelled_ratio: float = 0.5  # share of each batch drawn from unlabelled frames
    # share of the labelled images blended with another image of the batch (MixUp, weight
    # ~Beta(32, 32)); the teacher sees the same blend, the targets are both images' boxes
    mixup: float = 0.0
    teacher_bf16: str = "auto"  # auto | on | off
    teacher_layout: str = ""  # OutputLayout YAML for an external ONNX teacher
    teacher_kind: str = ""  # override the ONNX teacher's layout kind: understudy|yolo|pair|detr

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"kd.method {self.method!r} is not one of {', '.join(METHODS)}")
        bad = [t for t in self.hybrid if t not in TERMS]
        if bad:
            raise ConfigError(f"kd.hybrid has unknown terms {bad}; choose from {', '.join(TERMS)}")
        if self.feature_mask not in ("gt", "teacher", "none"):
            raise ConfigError("kd.feature_mask must be gt, teacher or none")
        if not 0 <= self.unlabelled_ratio < 1:
            raise ConfigError("kd.unlabelled_ratio must be in [0, 1)")
        if not 0 <= self.mixup <= 1:
            raise ConfigError(f"kd.mixup {self.mixup} must be in [0, 1] (a share of images)")

    @property
    def terms(self) -> tuple[str, ...]:
        if self.method == "hybrid":
            return self.hybrid
        if self.method == "pseudo":
            return ()
        return (self.method,)


@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    """A training config plus the ``kd`` section."""

    kd: KDConfig = field(default_factory=KDConfig)


class Context(NamedTuple):
    teacher: Any  # TeacherOutput
    targets: torch.Tensor  # (M, 6) labels + pseudo-labels, network pixels
    n_labelled: int
    dets: torch.Tensor | None = None  # (K, 6) teacher detections (dense targets)
    det_scores: torch.Tensor | None = None  # (K, C) their class probabilities


# why a teacher cannot give a term (see Teaches)
NEEDS = {
    "logit": ("anchors", "its anchors do not line up with the student's"),
    "ld": ("dist", "it has no box distributions"),
    "feature": ("features", "it exposes no features"),
    "cwd": ("features", "it exposes no features"),
    "attention": ("features", "it exposes no features"),
}


def plan_terms(cfg: KDConfig, teaches) -> tuple[tuple[str, ...], dict[str, str]]:
    """(terms to compute, {dropped term: why}) for a teacher that ``teaches`` (a
    :class:`distill.teachers.Teaches`). ``hybrid`` keeps what applies and, when it drops
    any term, adds ``dense`` (what every teacher teaches); ``logit`` from a teacher whose
    anchors do not line up becomes ``dense``; another single term it cannot give is an
    error."""

    def why(term: str) -> str | None:
        flag, reason = NEEDS.get(term, ("", ""))
        return None if not flag or getattr(teaches, flag) else reason

    if cfg.method == "hybrid":
        dropped = {t: r for t in cfg.hybrid if (r := why(t))}
        terms = [t for t in cfg.hybrid if t not in dropped]
        if dropped and "dense" not in terms:
            terms.append("dense")
        return tuple(terms), dropped
    reason = why(cfg.method)
    if reason and cfg.method == "logit":
        return ("dense",), {"logit": reason}
    if reason:
        raise ConfigError(
            f"--method {cfg.method} needs a native teacher (.pt): this teacher cannot give it "
            f"({reason}); use --method hybrid, dense, logit or pseudo"
        )
    return cfg.terms, {}


class Distiller:
    """Teacher + KD terms + unlabelled frames: the :class:`distill.trainee.KDPlugin` of a
    distillation run of :func:`distill.train.train`."""

    def __init__(
        self,
        cfg: KDConfig,
        teacher,
        student_channels: dict[str, int],
        img_size: int,
        unlabelled=None,
        batch_size: int = 16,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world: int = 1,
        loss_weights: LossWeights | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.teacher = teacher
        self.img_size = img_size
        self.terms, self.dropped = plan_terms(cfg, teacher.teaches(img_size))
        self.needs_features = any(t in FEATURE_TERMS for t in self.terms)
        self.needs_dets = "dense" in self.terms  # the lead's may be set for every run
        self.loss_weights = loss_weights or LossWeights()
        taught = getattr(getattr(teacher, "classes", None), "taught", None)
        self.taught = None if taught is None else torch.from_numpy(taught).to(self.device)
        self.adapters = None
        if any(t in ("feature", "cwd") for t in self.terms):
            with torch.random.fork_rng(devices=[]):  # seeded: the same init in any process
                torch.manual_seed(seed)
                adapters = FeatureAdapters(student_channels, teacher.feature_channels)
            self.adapters = adapters.to(self.device)
        self.weights = {t: getattr(cfg.weights, t) for t in self.terms}
        self.n_unlabelled = 0
        self._frames = None
        if unlabelled is not None and cfg.unlabelled_ratio > 0:
            self.n_unlabelled = max(1, round(batch_size * cfg.unlabelled_ratio))
            self._frames = FrameStream(unlabelled, self.n_unlabelled, seed, rank, world)
        self._post = None
        # MixUp draws: seeded per process, saved with last.pt (an exact resume)
        self._mix = np.random.default_rng([seed, rank, 0x5EED]) if cfg.mixup > 0 else None

    def plan_line(self) -> str:
        """One line: the teacher, the terms used, and those dropped and why."""
        method = self.cfg.method
        used = "+".join(self.terms) or "pseudo-labels only"
        line = f"{self.teacher.describe()}: --method {method} uses {used}"
        if self.dropped:
            why = "; ".join(f"{t}: {r}" for t, r in self.dropped.items())
            line += f"; dropped {', '.join(self.dropped)} ({why})"
        return line

    def labelled_batch_size(self, batch_size: int) -> int:
        """Labelled images per step, so that labelled + unlabelled = ``batch_size``."""
        return max(1, batch_size - self.n_unlabelled)

    def trainable_modules(self) -> list[torch.nn.Module]:
        return [self.adapters] if self.adapters is not None else []

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to prepare the same batches: the frame stream's
        position and the MixUp draws (the teacher and the KD terms hold no state between
        steps)."""
        state: dict[str, Any] = {}
        if self._frames is not None:
            state["frames"] = self._frames.state_dict()
        if self._mix is not None:
            state["mixup"] = self._mix.bit_generator.state
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._frames is not None and "frames" in state:
            self._frames.load_state_dict(state["frames"])
        if self._mix is not None and "mixup" in state:
            self._mix.bit_generator.state = state["mixup"]

    def mixup(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Blend ``kd.mixup`` of the images with another image of the batch (weight drawn
        from Beta(32, 32), about one half); a blended image's targets are both images'
        boxes. The teacher then runs on the blends: the student is taught on exactly the
        view it sees, a harder one than the plain batch."""
        n = images.shape[0]
        chosen = np.flatnonzero(self._mix.random(n) < self.cfg.mixup)
        partner = self._mix.permutation(n)
        lam = self._mix.beta(32.0, 32.0, n).astype(np.float32)
        pairs = [(int(i), int(partner[i])) for i in chosen if partner[i] != i]
        if not pairs:
            return images, targets
        mixed, extra = images.clone(), [targets]
        for i, j in pairs:
            mixed[i] = lam[i] * images[i] + (1 - lam[i]) * images[j]
            theirs = targets[targets[:, 0] == j].clone()
            theirs[:, 0] = i
            extra.append(theirs)
        return mixed, torch.cat(extra)

    def prepare(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor, Context]:
        """Images and targets on the training device, plus the teacher's outputs (and its
        detections, when a run learns dense targets)."""
        images = batch[0].to(self.device, non_blocking=True)
        targets = batch[1].to(self.device)
        if self._mix is not None:
            images, targets = self.mixup(images, targets)
        n_labelled = images.shape[0]
        if self._frames is not None:
            frames = next(self._frames)[0].to(self.device, non_blocking=True)
            images = torch.cat([images, frames])
        t_out = self.teacher(images, need_features=self.needs_features)
        if self._frames is not None:
            pseudo = self.pseudo_labels(t_out.boxes[n_labelled:], t_out.scores[n_labelled:])
            pseudo[:, 0] += n_labelled
            targets = torch.cat([targets, pseudo.to(self.device)])
        dets = det_scores = None
        if self.needs_dets:
            dets, det_scores = teacher_detections(
                t_out.boxes, t_out.scores, self.cfg.dense_min_score, self.cfg.pseudo_iou
            )
        return images, targets, Context(t_out, targets, n_labelled, dets, det_scores)

    @torch.no_grad()
    def pseudo_labels(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Teacher detections above ``pseudo_threshold`` after class-aware NMS ->
        (M, 6) [batch_idx, cls, x1, y1, x2, y2] network pixels."""
        from runtime.model_spec import ModelSpec
        from runtime.postprocess import Postprocessor
        from runtime.preprocess import Letterbox

        s = self.img_size
        if self._post is None:
            spec = ModelSpec(
                class_names=tuple(str(i) for i in range(scores.shape[-1])), input_size=(s, s)
            )
            self._post = Postprocessor(
                spec,
                score_threshold=self.cfg.pseudo_threshold,
                iou_threshold=self.cfg.pseudo_iou,
                max_detections=100,
            )
        identity = Letterbox(1.0, 0, 0, (s, s), (s, s))
        outputs = {"boxes": boxes.float().cpu().numpy(), "scores": scores.float().cpu().numpy()}
        rows = []
        for i, det in enumerate(self._post(outputs, [identity] * len(boxes))):
            if len(det):
                idx = np.full((len(det), 1), i, np.float32)
                rows.append(
                    np.concatenate([idx, det.class_ids[:, None].astype(np.float32), det.boxes], 1)
                )
        if not rows:
            return torch.zeros(0, 6)
        return torch.from_numpy(np.concatenate(rows)).float()

    def loss(
        self,
        ctx: Context,
        out: HeadOutput,
        feats: dict[str, torch.Tensor] | None,
        assignment: Assignment,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        t = ctx.teacher
        terms: dict[str, torch.Tensor] = {}
        teacher_score = t.scores.amax(-1) if t.scores.shape[1] == out.cls.shape[1] else None
        if "logit" in self.terms:  # plan_terms keeps it only where the anchors line up
            t_ = self.cfg.logit_temperature
            terms["logit"] = logit_kd(out.cls, t.cls_logits, t_, teacher_score)
        if "ld" in self.terms:
            w = teacher_score * (teacher_score > self.cfg.ld_min_score)
            terms["ld"] = localization_kd(out.dist, t.dist, self.cfg.ld_temperature, w)
        if "feature" in self.terms:
            terms["feature"] = feature_kd(
                feats, t.feats, self.adapters, self._feature_mask(ctx, feats)
            )
        if "cwd" in self.terms:
            terms["cwd"] = channel_wise_kd(feats, t.feats, self.adapters, self.cfg.cwd_temperature)
        if "attention" in self.terms:
            terms["attention"] = attention_kd(feats, t.feats)
        if "dense" in self.terms:
            strides = tuple(self.img_size // h for h, _ in out.shapes)
            terms["dense"], _ = dense_kd(
                out, strides, ctx.dets, ctx.det_scores, self.taught, self.loss_weights
            )
        if not terms:
            return out.cls.sum() * 0.0, {}
        total, logged = hybrid_kd(terms, self.weights)
        return total, {f"kd_{k}": v for k, v in logged.items()}

    def _feature_mask(
        self, ctx: Context, feats: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor] | None:
        shapes = {name: tuple(f.shape[2:]) for name, f in feats.items()}
        if self.cfg.feature_mask == "none":
            return None
        if self.cfg.feature_mask == "teacher":
            return scores_to_level_masks(ctx.teacher.scores, shapes, self.cfg.mask_score_threshold)
        b = next(iter(feats.values())).shape[0]
        boxes = [ctx.targets[ctx.targets[:, 0] == i, 2:6] for i in range(b)]
        return boxes_to_level_masks(boxes, (self.img_size, self.img_size), shapes)


class FrameStream:
    """Endless batches of unlabelled frames: this process's share, resumable.

    Pass ``p`` shuffles all frames with the seed ``seed * 1000 + p``; process ``rank`` of
    ``world`` takes every ``world``-th frame of that order from position ``rank`` (the
    shares are disjoint; a tail that does not divide evenly sits the pass out), in
    batches of ``batch`` (the last, smaller one left out when the share holds a full
    batch). Its position (pass, batch) goes into ``last.pt``
    (:meth:`state_dict`), so that a resumed run draws the frames the interrupted one
    would have drawn next. Each item: :func:`collate_frames` of the batch.
    """

    def __init__(self, dataset, batch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if len(dataset) < world:
            raise DataError(
                f"{len(dataset)} unlabelled frames cannot be shared by {world} processes; "
                "add frames or run fewer processes"
            )
        self.dataset, self.batch, self.seed = dataset, batch, seed
        self.rank, self.world = rank, world
        self.pass_, self.next_batch = 0, 0

    def share(self, pass_: int) -> list[int]:
        """This process's frame indices in pass ``pass_``, in drawing order."""
        g = torch.Generator().manual_seed(self.seed * 1000 + pass_)
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        usable = len(order) - len(order) % self.world
        return order[self.rank : usable : self.world]

    def batches_per_pass(self) -> int:
        n = len(self.dataset) // self.world
        return n // self.batch if n >= self.batch else 1

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self) -> tuple[torch.Tensor, list]:
        from distill.data.torch_dataset import collate_frames

        if self.next_batch >= self.batches_per_pass():
            self.pass_, self.next_batch = self.pass_ + 1, 0
        k = self.next_batch
        idx = self.share(self.pass_)[k * self.batch : (k + 1) * self.batch]
        self.next_batch += 1
        return collate_frames([self.dataset[i] for i in idx])

    def state_dict(self) -> dict[str, int]:
        return {"pass": self.pass_, "batch": self.next_batch, "world": self.world}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at ``state``'s position; from another number of processes the shares
        differ, so the stream starts its current pass again."""
        self.pass_ = int(state["pass"])
        same = int(state.get("world", 1)) == self.world
        self.next_batch = int(state["batch"]) if same else 0


def distill(
    cfg: DistillConfig,
    teacher_path: str,
    data: str,
    out_dir: str,
    unlabelled: str | None = None,
    resume: bool = False,
    progress: bool = True,
):
    """Distil a ``cfg.model`` student from ``teacher_path`` on ``data`` (+ unlabelled frames)."""
    return distill_many([cfg], teacher_path, data, [out_dir], unlabelled, resume, progress)[0]


# kd keys that decide what the shared teacher pass produces (unlabelled frames, pseudo-labels)
SHARED_KD_KEYS = (
    "pseudo_threshold",
    "pseudo_iou",
    "unlabelled_ratio",
    "teacher_bf16",
    "teacher_layout",
    "teacher_kind",
    "dense_min_score",
    "mixup",
)


def distill_many(
    cfgs: list[DistillConfig],
    teacher_path: str,
    data: str,
    out_dirs: list[str],
    unlabelled: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list:
    """Distil several students from one teacher on the same batches, e.g. one per method.

    Each student is what :func:`distill` would make of its config alone, but the teacher
    runs once per step for all of them (see :func:`distill.train.train_many`): the methods
    of the accuracy benchmark then cost one teacher pass instead of five. The configs must
    agree on the batch-shaping keys and on ``SHARED_KD_KEYS``.
    """
    from distill.train import train_many

    cfg = cfgs[0]
    if unlabelled is None and any(c.kd.method == "pseudo" for c in cfgs):
        raise ConfigError(
            "--method pseudo teaches only through teacher pseudo-labels on unlabelled frames: "
            "pass --unlabelled FOLDER (without it the student would train from scratch)"
        )
    for other in cfgs[1:]:
        diff = [k for k in SHARED_KD_KEYS if getattr(other.kd, k) != getattr(cfg.kd, k)]
        if diff:
            raise ConfigError(f"students distilled together must share kd.{', kd.'.join(diff)}")
    distillers, frames = _distillers(cfgs, teacher_path, data, unlabelled)
    return train_many(
        cfgs,
        data,
        out_dirs,
        resume=resume,
        distillers=distillers,
        teacher_path=str(teacher_path),
        progress=progress,
        skipped={"unlabelled": frames.skipped} if frames is not None else None,
    )


def _distillers(
    cfgs: list[DistillConfig], teacher_path: str, data: str, unlabelled: str | None
) -> tuple[list[Distiller], Any]:
    """One distiller per config around one shared teacher, and the unlabelled frames they
    draw from (None without ``unlabelled``)."""
    from distill import ddp
    from distill.data.torch_dataset import UnlabelledFrames
    from distill.models.presets import build_detector
    from distill.teachers import open_teacher
    from runtime.data.dataset import load_split

    cfg = cfgs[0]
    names = load_split(data, "val", skip_bad=cfg.skip_bad).class_names
    rank, world, device = ddp.setup()  # this process's GPU under torchrun, else cuda / cpu
    teacher = open_teacher(
        teacher_path,
        names,
        device,
        bf16_enabled(cfg.kd.teacher_bf16, device),
        cfg.kd.teacher_layout or None,
        kind=cfg.kd.teacher_kind,
        img_size=cfg.img_size,
    )
    frames = UnlabelledFrames(unlabelled, cfg.img_size, cfg.skip_bad) if unlabelled else None
    distillers = [
        Distiller(
            c.kd,
            teacher,
            dict(build_detector(c.scale(), len(names)).neck.out_channels),
            c.img_size,
            frames,  # only the first distiller draws from them (it prepares every batch)
            c.batch_size,
            c.seed,
            device=device,
            rank=rank,
            world=world,
            loss_weights=c.loss,
        )
        for c in cfgs
    ]
    distillers[0].needs_dets = any(d.needs_dets for d in distillers)  # it prepares every batch
    if rank == 0:
        if hasattr(teacher, "classes"):
            log.info("%s", teacher.classes.report())
        for d in distillers:
            if d.dropped:
                log.warning("%s", d.plan_line())
            else:
                log.info("%s", d.plan_line())
    return distillers, frames


def measure_distill_steps(
    cfg: DistillConfig,
    teacher_path: str,
    data: str,
    unlabelled: str | None = None,
    steps: int = 3,
) -> StepTiming:
    """Time a few real steps of ``distill(cfg, teacher_path, data, ..., unlabelled)`` (the
    teacher's pass and the unlabelled frames included): see
    :func:`distill.train.measure_steps`. The teacher's weights do not change the time, so
    an untrained checkpoint of its size does."""
    from distill.train import measure_steps

    distiller = _distillers([cfg], teacher_path, data, unlabelled)[0][0]
    return measure_steps(cfg, data, distiller=distiller, steps=steps)
