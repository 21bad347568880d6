"""Fixtures for the runtime tests: an isolated cache dir and tiny ONNX models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.tiny_models import build_conv_model, make_spec


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture
def raw_model(tmp_path: Path) -> Path:
    return build_conv_model(tmp_path / "raw.onnx", make_spec())


@pytest.fixture
def decoded_model(tmp_path: Path) -> Path:
    return build_conv_model(tmp_path / "decoded.onnx", make_spec(output_layout="decoded_xyxy"))
