"""Tiny datasets and checkpoints shared by the offline tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.data.synth import generate
from distill.data.synth_config import SynthConfig

TINY = SynthConfig(train=8, val=4, unlabelled=6, video_frames=3, video_width=160, video_height=120)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synth dataset: 8 train, 4 val, 6 unlabelled images of 320x240."""
    return generate(tmp_path_factory.mktemp("tiny") / "ds", seed=3, config=TINY)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A nano checkpoint trained for two steps on ``tiny_data`` at 64 px."""
    from distill.config import load
    from distill.train import train
    from distill.train_config import TrainConfig

    cfg = load(
        TrainConfig,
        None,
        ["model=nano", "img_size=64", "epochs=1", "batch_size=4", "max_steps=2", "bf16=off"],
    )
    return train(cfg, tiny_data, tmp_path_factory.mktemp("ckpt"), progress=False)
