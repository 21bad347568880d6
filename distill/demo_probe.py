"""What the demo measures before it plans its budget (:mod:`distill.demo_plan`): a few
real training steps of the teacher and of the distilled student, and an evaluation pass of
each model, on this machine and with the settings the demo will train with."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from distill.demo_plan import ModelCost
from distill.distillation import DistillConfig
from distill.train_config import TrainConfig

FORWARD_BATCH = 16  # images per timed forward pass (the evaluation's batch)
# The evaluation at the end of training, from the forward pass's time per image: loading
# and letterboxing, post-processing and COCO scoring add about as much again, plus set-up.
EVAL_PER_FORWARD = 2.0
EVAL_FIXED_S = 2.0
# One torch thread is chosen over the default (one per core) when its teacher steps take
# less than this share of the default's: on cores that other processes share, torch's
# threads wait for each other at every operation (measured: a training step 3.7x faster
# with 1 thread than with 2 on a 2-core machine at a load average of 5).
ONE_THREAD_GAIN = 0.9


def measure_costs(
    teacher_cfg: TrainConfig, student_cfg: DistillConfig, data: Path, unlabelled: Path
) -> tuple[ModelCost, ModelCost, dict[str, float], str]:
    """(the teacher's training cost, the distilled student's, the seconds per image of
    each one's forward pass: {"teacher": s, "student": s}, and a line on the threads).

    Each model's steps are timed after a warm-up step by :func:`distill.train.measure_steps`
    (the student's with its teacher's pass and unlabelled frames: an untrained checkpoint
    of the teacher's size costs what the trained one will). The teacher's steps are also
    timed with one torch thread, and one thread is kept for the rest of the process when
    it is clearly faster (:func:`choose_threads`). Nothing is written."""
    from distill.distillation import measure_distill_steps
    from distill.train import measure_steps
    from runtime.data.dataset import load_split

    t = measure_steps(teacher_cfg, data, threads=(1,))
    threads, line = choose_threads(t.by_threads)
    t = replace(t, seconds_per_step=t.by_threads[threads])
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
    return teacher, student, per_image, line


def choose_threads(by_threads: dict[int, float]) -> tuple[int, str]:
    """Set torch's thread count from seconds per step timed with each ``{threads: s}``:
    the count in use, or 1 when its steps took under ``ONE_THREAD_GAIN`` of that.
    Returns (the count set, a line for the plan)."""
    import torch

    n = torch.get_num_threads()
    timed = ", ".join(f"{by_threads[k]:.2f} s with {k}" for k in sorted(by_threads, reverse=True))
    if n > 1 and 1 in by_threads and by_threads[1] < ONE_THREAD_GAIN * by_threads[n]:
        torch.set_num_threads(1)
        return 1, f"threads: 1 of {n} (a teacher step took {timed}: the cores are shared)"
    return n, f"threads: {n} (a teacher step took {timed})"


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
