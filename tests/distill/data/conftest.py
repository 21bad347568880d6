"""Tiny synthetic datasets shared by the data tests (generated once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.data.synth import generate
from distill.data.synth_config import SynthConfig

TINY = SynthConfig(train=6, val=4, unlabelled=3, video_frames=5, video_width=160, video_height=120)


@pytest.fixture(scope="session")
def tiny_config() -> SynthConfig:
    """The config of ``tiny_synth`` (seed 7)."""
    return TINY


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synth dataset with 6 train, 4 val, 3 unlabelled images and a 5-frame video."""
    return generate(tmp_path_factory.mktemp("synth") / "ds", seed=7, config=TINY)
