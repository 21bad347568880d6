"""What the demo measures before planning: the distillation's steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import load
from distill.distillation import DistillConfig, Distiller, measure_distill_steps

BASE = ["model=nano", "img_size=64", "batch_size=4", "bf16=off", "epochs=2"]


def test_distill_steps_include_the_teacher_and_the_unlabelled_frames(
    tiny_data: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared: list[int] = []
    real_prepare = Distiller.prepare

    def prepare(self, batch):
        images, targets, context = real_prepare(self, batch)
        prepared.append(images.shape[0])
        return images, targets, context

    monkeypatch.setattr(Distiller, "prepare", prepare)
    cfg = load(DistillConfig, None, [*BASE, "kd.unlabelled_ratio=0.5"])
    timing = measure_distill_steps(
        cfg, str(tiny_checkpoint), str(tiny_data), tiny_data / "unlabelled"
    )
    assert timing.steps_per_epoch == 4  # 2 labelled images per batch of 4, 8 images
    assert prepared == [4, 4, 4, 4] and timing.seconds_per_step > 0  # 1 warm-up + 3 timed
