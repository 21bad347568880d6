"""Shared test set-up: private caches, clean skips for GPU/TensorRT tests, and the tiny
synthetic dataset the data tests of both packages read."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

# ONNX Runtime and torch write caches under ~/.cache on first use: keep tests hermetic.
# pip's cache stays the user's, so the fresh-install test reuses the wheels pip already has.
if "XDG_CACHE_HOME" not in os.environ and sys.platform.startswith("linux"):
    os.environ.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="understudy-test-cache-"))


try:  # tiny test models: one thread avoids thread wake-up costs and oversubscription
    import torch

    torch.set_num_threads(1)
except ImportError:  # runtime-only install
    pass


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_trt = importlib.util.find_spec("tensorrt") is not None
    has_cuda = _cuda_available()
    for item in items:
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="TensorRT is not installed on this machine"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="no CUDA GPU on this machine"))


@pytest.fixture(scope="session")
def tiny_config():
    """The config of ``tiny_synth`` (a distill.data.synth_config.SynthConfig, seed 7)."""
    from distill.data.synth_config import SynthConfig

    return SynthConfig(
        train=6, val=4, unlabelled=3, video_frames=5, video_width=160, video_height=120
    )


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory, tiny_config) -> Path:
    """A synth dataset with 6 train, 4 val, 3 unlabelled images and a 5-frame video."""
    from distill.data.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "ds", seed=7, config=tiny_config)
