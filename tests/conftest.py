"""Shared test set-up: private caches, and clean skips for GPU/TensorRT tests."""

from __future__ import annotations

import importlib.util
import os
import tempfile

import pytest

# ONNX Runtime and torch write caches under ~/.cache on first use: keep tests hermetic.
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
