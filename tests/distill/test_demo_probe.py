"""What the demo measures before planning: the distillation's steps and the threads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill import demo_probe
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


@pytest.mark.parametrize(("one_thread_s", "chosen"), [(0.5, 1), (1.95, 2)])
def test_one_thread_only_when_clearly_faster(one_thread_s: float, chosen: int) -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        n, line = demo_probe.choose_threads({2: 2.0, 1: one_thread_s})
        assert n == chosen == torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    assert f"a teacher step took 2.00 s with 2, {one_thread_s:.2f} s with 1" in line
    assert line.startswith("threads: 1 of 2" if chosen == 1 else "threads: 2 (")
