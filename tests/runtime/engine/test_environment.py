"""The machine an engine is built for: GPU name and compute capability."""

from __future__ import annotations

import subprocess
import sys

import pytest

import runtime.engine.environment as env_mod
from runtime.errors import BackendUnavailable


def test_gpu_info_from_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pycuda", "pycuda.driver", "cuda", "cuda.bindings", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)

    def fake_run(cmd, **kw):
        assert cmd[0] == "nvidia-smi"
        return subprocess.CompletedProcess(cmd, 0, "NVIDIA H100 80GB HBM3, 9.0\n", "")

    monkeypatch.setattr(env_mod.subprocess, "run", fake_run)
    assert env_mod.gpu_info() == ("NVIDIA H100 80GB HBM3", "9.0")

    def no_smi(cmd, **kw):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(env_mod.subprocess, "run", no_smi)
    with pytest.raises(BackendUnavailable, match="cannot identify the GPU"):
        env_mod.gpu_info()
