"""What the demo measures before it plans its budget (:mod:`distill.demo_plan`): a few
real training steps of the teacher and of the distilled student, and a forward pass of
each model, on this machine and with the settings the demo will train with."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from distill.demo_plan import ModelCost
from distill.distillation import DistillConfig
from distill.train_config import TrainConfig

FORWARD_BATCH = 16  # images per timed forward pass (the evaluation's batch)
# The evaluation at the end of training, from the forward pass's time per image (loading,
# post-processing and COCO scoring are small beside it), plus set-up.
EVAL_PER_FORWARD = 1.2
EVAL_FIXED_S = 1.0


def measure_costs(
    teacher_cfg: TrainConfig, student_cfg: DistillConfig, data: Path, unlabelled: Path
) -> tuple[ModelCost, ModelCost, dict[str, float]]:
    """(the teacher's training cost, the distilled student's, and the seconds per image of
    each one's forward pass: {"teacher": s, "student": s}).

    Each model's steps are timed after a warm-up step by :func:`distill.train.measure_steps`
    (the student's with its teacher's pass and unlabelled frames: an untrained checkpoint
    of the teacher's size costs what the trained one will). Nothing is written."""
    from distill.distillation import measure_distill_steps
    from distill.train import measure_steps
    from runtime.data.dataset import load_split

    t = measure_steps(teacher_cfg, data)
    with tempfile.TemporaryDirectory() as tmp:
        teacher_pt = _untrained_checkpoint(teacher_cfg, data, Path(tmp) / "teacher.pt")
        s = measure_distill_steps(student_cfg, str(teacher_pt), str(data), str(unlabelled))
    val = load_split(data, "val")
    per_image = {
        "teacher": forward_seconds_per_image(teacher_cfg, val),
        "student": forward_seconds_per_image(student_cfg, val),
    }
    n_val = len(val.records)
    teacher, student = (
        ModelCost(
            timing.seconds_per_step,
            timing.steps_per_epoch,
            timing.warmup_seconds,
            EVAL_FIXED_S + EVAL_PER_FORWARD * per_image[name] * n_val,
        )
        for name, timing in (("teacher", t), ("student", s))
    )
    return teacher, student, per_image


def forward_seconds_per_image(cfg: TrainConfig, val) -> float:
    """Seconds per image of an eval-mode forward pass (fp32, as evaluated and exported) of
    an untrained ``cfg`` model on a batch of ``val`` images, after a warm-up pass."""
    import torch

    from distill.data.torch_dataset import DetectionDataset, collate
    from distill.models.presets import build_detector

    model = build_detector(cfg.scale(), len(val.class_names)).eval()
    dataset = DetectionDataset(val, cfg.img_size, augment=False, cache=False)
    images = collate([dataset[i] for i in range(min(len(dataset), FORWARD_BATCH))])[0]
    with torch.inference_mode():
        model(images[:2])
        t0 = time.perf_counter()
        model(images)
        return (time.perf_counter() - t0) / len(images)


def _untrained_checkpoint(cfg: TrainConfig, data: Path, path: Path) -> Path:
    """A checkpoint of an untrained ``cfg`` model (a stand-in teacher for timing)."""
    from distill.checkpoint import make_checkpoint, save_atomic
    from distill.models.presets import build_detector
    from runtime.data.dataset import load_split

    names = load_split(data, "val").class_names
    model = build_detector(cfg.scale(), len(names))
    model.head.reset_bias(cfg.img_size)
    ckpt = make_checkpoint(
        model, preset=cfg.arch_name, scale=cfg.scale(), class_names=names, img_size=cfg.img_size
    )
    return save_atomic(ckpt, path)
