"""One TensorRT engine build: batch profile, parser errors, progress, and without TensorRT.

The tests marked ``tensorrt`` build and run real engines and are skipped where TensorRT is
not installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import pytest
from onnx import helper

from runtime.cli import main
from runtime.engine.build import ProgressPrinter, batch_profile, build_engine, parser_errors
from runtime.engine.cache import build_or_load_engine
from runtime.errors import BackendUnavailable, ConfigError, ModelFileError
from tests.runtime.engine.engine_fakes import tiny_onnx


def test_batch_profile_defaults_and_rules() -> None:
    assert batch_profile(None, None, 4, 16) == (1, 4, 16)
    assert batch_profile("batch", None, None, None) == (1, 1, 8)
    assert batch_profile(1, None, None, None) is None
    with pytest.raises(ConfigError):
        batch_profile("batch", 4, 2, 8)
    with pytest.raises(ConfigError, match="static batch"):
        batch_profile(1, None, None, 4)


def test_parser_errors_name_node_and_op() -> None:
    class Err:
        def __init__(self, **kw):
            self.kw = kw

        def desc(self):
            return self.kw["desc"]

        def __getattr__(self, name):
            if name in self.kw:
                return lambda: self.kw[name]
            raise AttributeError(name)

    class Parser:
        errors: ClassVar[list[Err]] = [
            Err(desc="unsupported op", node_name="/post/Unique", node_operator="Unique", node=7),
            Err(desc="bad weights", node=3),  # an older TensorRT: index only
            Err(desc="cannot read file", node=-1),
        ]
        num_errors = 3

        def get_error(self, i):
            return self.errors[i]

    assert parser_errors(Parser()) == [
        "node /post/Unique (Unique): unsupported op", "node #3: bad weights", "cannot read file",
    ]  # fmt: skip


def test_progress_printer_prints_phases() -> None:
    lines: list[str] = []
    p = ProgressPrinter(lines.append)
    p.phase_start("Building engine", None, 20)
    p.phase_start("Tactic selection", "Building engine", 3)
    for i in range(20):
        assert p.step_complete("Building engine", i) is True
    p.phase_finish("Tactic selection")
    p.phase_finish("Building engine")
    assert lines[0] == "Building engine (20 steps)"
    assert lines[1] == "  Tactic selection (3 steps)"
    assert "  Building engine: 20/20" in lines
    assert lines[-1].startswith("Building engine done in")


def test_without_tensorrt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    model = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(BackendUnavailable, match="TensorRT"):
        build_engine(model, tmp_path / "m.engine", "fp16")
    assert main(["compile", str(model), "--precision", "fp16", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TensorRT" in err


def test_module_imports_without_torch() -> None:
    code = (
        "import sys, runtime.engine.cache, runtime.engine.preflight, runtime.commands.compile; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- real TensorRT (skipped where it is not installed) ---------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill.export import export_onnx
    from tests.distill.test_export import random_checkpoint

    root = tmp_path_factory.mktemp("trt")
    ckpt = random_checkpoint(root / "s.pt")
    export_onnx(ckpt, root / "s.onnx", dynamic_batch=True, validate=False)
    return root / "s.onnx"


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_engine_matches_onnxruntime(exported: Path, tmp_path: Path, precision: str) -> None:
    from runtime.backends import open_backend

    engine = build_or_load_engine(exported, precision, tmp_path, max_batch=4, out=print)
    again = build_or_load_engine(exported, precision, tmp_path, max_batch=4, out=print)
    assert again == engine
    trt_backend, ort_backend = open_backend(engine), open_backend(exported)
    x = np.random.default_rng(0).random((3, 3, 160, 160), dtype=np.float32)
    got, ref = trt_backend.infer(x), ort_backend.infer(x)
    tol = {"fp32": (0.05, 1e-3), "fp16": (2.0, 0.02)}[precision]
    assert np.abs(got["boxes"] - ref["boxes"]).mean() < tol[0]
    assert np.abs(got["scores"] - ref["scores"]).mean() < tol[1]
    trt_backend.close()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_parser_error_names_the_node(tmp_path: Path) -> None:
    model = onnx.load(str(tiny_onnx(tmp_path / "m.onnx")))
    model.graph.node.append(helper.make_node("NoSuchOp", ["y"], ["z"], name="/bad/NoSuchOp"))
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(ModelFileError, match="NoSuchOp"):
        build_engine(tmp_path / "bad.onnx", tmp_path / "bad.engine", "fp32")
