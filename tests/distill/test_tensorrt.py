"""TensorRT engine building and the engine cache.

The cache logic (key, lookup, invalidation, atomic writes, corrupt files) runs here with a
fake builder, deserializer and environment injected; the tests marked ``tensorrt`` build
and run real engines and are skipped where TensorRT is not installed.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import distill.tensorrt as trt_mod
from distill.tensorrt import (
    BuildResult,
    ProgressPrinter,
    batch_profile,
    build_or_load_engine,
    engine_cache_key,
    parser_errors,
)
from runtime.cli import main
from runtime.errors import BackendUnavailable, ConfigError
from runtime.model_spec import ModelSpec

SPEC = ModelSpec(class_names=("a", "b"), input_size=(32, 32))


def tiny_onnx(path: Path, batch: int | str = "batch", qdq: bool = False) -> Path:
    """images (B, 3, 32, 32) -> Conv -> y, with Understudy metadata (optionally Q/DQ)."""
    w = numpy_helper.from_array(np.full((2, 3, 1, 1), 0.1, np.float32), "w")
    inits, first = [w], "images"
    nodes = []
    if qdq:
        inits.append(numpy_helper.from_array(np.array(0.02, np.float32), "s"))
        inits.append(numpy_helper.from_array(np.array(0, np.int8), "z"))
        nodes.append(helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"], name="/q"))
        nodes.append(helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="/dq"))
        first = "dq"
    nodes.append(helper.make_node("Conv", [first, "w"], ["y"], name="/conv/Conv"))
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2, 32, 32])
    graph = helper.make_graph(nodes, "tiny", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = ModelSpec(**{**SPEC.__dict__, "precision": "int8" if qdq else "fp32"})
    for k, v in spec.to_metadata_props().items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


class Fakes:
    """A builder that writes a fake engine, a deserializer and a machine, all adjustable."""

    def __init__(self) -> None:
        self.env = ["10.3.0", "Orin (nvgpu)", "8.7"]
        self.builds: list[tuple[Path, str, tuple | None]] = []
        self.loads = True
        self.messages: list[str] = []

    def builder(self, onnx_path: Path, engine_path: Path, precision: str, **kw) -> BuildResult:
        self.builds.append((engine_path, precision, kw["profile"]))
        engine_path.parent.mkdir(parents=True, exist_ok=True)
        engine_path.write_bytes(f"engine {precision} #{len(self.builds)}".encode() * 8)
        return BuildResult(engine_path, precision, kw["profile"], 1.5, self.env[0])

    def call(self, onnx_path: Path, precision: str | None, cache: Path, **kw) -> Path:
        return build_or_load_engine(
            onnx_path, precision, cache, builder=self.builder, validate=lambda p: self.loads,
            environment=lambda: tuple(self.env), out=self.messages.append, **kw,
        )  # fmt: skip


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


def test_key_changes_with_each_component() -> None:
    base = ("abc123", "10.3.0", "Orin", "8.7", "fp16")
    key = engine_cache_key(*base)
    assert key == engine_cache_key(*base) and len(key) == 16
    for i, other in enumerate(("abc124", "11.0.0", "Thor", "8.6", "int8")):
        changed = list(base)
        changed[i] = other
        assert engine_cache_key(*changed) != key, f"component {i} ignored"
    assert engine_cache_key(*base, profile=(1, 1, 8)) != engine_cache_key(*base, profile=(1, 1, 4))


def test_builds_once_then_uses_the_cache(fakes: Fakes, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "student.onnx")
    engine = fakes.call(model, "fp16", tmp_path / "cache")
    assert len(fakes.builds) == 1 and fakes.builds[0][2] == (1, 1, 8)
    onnx_hash = trt_mod.file_hash(model)
    key = engine_cache_key(onnx_hash, *fakes.env, "fp16", (1, 1, 8))
    assert engine == tmp_path / "cache" / f"student-{key}.engine"
    spec = ModelSpec.read_sidecar(engine)
    assert spec.precision == "fp16" and spec.class_names == SPEC.class_names
    info = spec.extra["tensorrt"]
    assert info["cache_key"] == key and info["onnx_hash"] == onnx_hash
    assert (info["tensorrt_version"], info["gpu_name"], info["compute_capability"]) == tuple(
        fakes.env
    )
    assert info["batch_profile"] == [1, 1, 8] and info["build_seconds"] == 1.5
    assert fakes.call(model, "fp16", tmp_path / "cache") == engine
    assert len(fakes.builds) == 1 and "using cached engine" in fakes.messages[-1]
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if "tmp" in p.name]
    assert leftovers == []


def test_upgrade_or_other_gpu_rebuilds(fakes: Fakes, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    first = fakes.call(model, "fp32", tmp_path)
    fakes.env[0] = "10.7.0"  # a JetPack upgrade
    second = fakes.call(model, "fp32", tmp_path)
    fakes.env[1:] = ["NVIDIA H100", "9.0"]
    third = fakes.call(model, "fp32", tmp_path)
    assert len({first, second, third}) == 3 and len(fakes.builds) == 3
    assert first.is_file()  # the old engine is left alone


def test_corrupt_or_undeserializable_engine_is_rebuilt(fakes: Fakes, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    engine = fakes.call(model, "fp16", tmp_path)
    engine.write_bytes(engine.read_bytes()[:10])  # truncated by a crash or a full disk
    assert fakes.call(model, "fp16", tmp_path) == engine
    assert len(fakes.builds) == 2 and "corrupt" in fakes.messages[-1]
    fakes.loads = False  # bytes intact, but TensorRT refuses them
    fakes.call(model, "fp16", tmp_path)
    assert len(fakes.builds) == 3 and "cannot deserialize" in fakes.messages[-1]
    fakes.loads = True
    trt_mod.ModelSpec.read_sidecar(engine)  # a valid sidecar was rewritten each time
    (engine.parent / (engine.name + ".json")).write_text("{not json")
    fakes.call(model, "fp16", tmp_path)
    assert len(fakes.builds) == 4 and "sidecar" in fakes.messages[-1]


def test_failed_build_leaves_nothing_and_is_retried(fakes: Fakes, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")

    def failing(*a, **kw):
        raise trt_mod.UnderstudyError("TensorRT could not build")

    with pytest.raises(trt_mod.UnderstudyError):
        build_or_load_engine(model, "fp32", tmp_path / "c", builder=failing,
                             environment=lambda: tuple(fakes.env), out=print)  # fmt: skip
    assert not list(tmp_path.rglob("*.engine*"))
    fakes.call(model, "fp32", tmp_path / "c")
    assert len(fakes.builds) == 1


def test_precision_and_profile_rules(fakes: Fakes, tmp_path: Path) -> None:
    fp32 = tiny_onnx(tmp_path / "f.onnx")
    qdq = tiny_onnx(tmp_path / "q.onnx", qdq=True)
    static = tiny_onnx(tmp_path / "s.onnx", batch=1)
    with pytest.raises(ConfigError, match="understudy quantize"):
        fakes.call(fp32, "int8", tmp_path)
    with pytest.raises(ConfigError, match="--precision int8"):
        fakes.call(qdq, "fp16", tmp_path)
    fakes.call(qdq, None, tmp_path)  # default: the model's own precision
    assert fakes.builds[-1][1] == "int8"
    fakes.call(static, "fp32", tmp_path)
    assert fakes.builds[-1][2] is None
    with pytest.raises(ConfigError, match="static batch"):
        fakes.call(static, "fp32", tmp_path, max_batch=4)
    fakes.call(fp32, "fp32", tmp_path, min_batch=2, max_batch=4)
    assert fakes.builds[-1][2] == (2, 2, 4)
    assert batch_profile(None, None, 4, 16) == (1, 4, 16)
    with pytest.raises(ConfigError):
        batch_profile("batch", 4, 2, 8)


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
        trt_mod.build_engine(model, tmp_path / "m.engine", "fp16")
    assert main(["compile", str(model), "--precision", "fp16", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TensorRT" in err


def test_gpu_info_from_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pycuda", "pycuda.driver", "cuda", "cuda.bindings", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)

    def fake_run(cmd, **kw):
        assert cmd[0] == "nvidia-smi"
        return subprocess.CompletedProcess(cmd, 0, "NVIDIA H100 80GB HBM3, 9.0\n", "")

    monkeypatch.setattr(trt_mod.subprocess, "run", fake_run)
    assert trt_mod.gpu_info() == ("NVIDIA H100 80GB HBM3", "9.0")

    def no_smi(cmd, **kw):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(trt_mod.subprocess, "run", no_smi)
    with pytest.raises(BackendUnavailable, match="cannot identify the GPU"):
        trt_mod.gpu_info()


def test_cli_compile_with_fakes(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    patched = functools.partial(
        build_or_load_engine, builder=fakes.builder, validate=lambda p: True,
        environment=lambda: tuple(fakes.env),
    )  # fmt: skip
    monkeypatch.setattr(trt_mod, "build_or_load_engine", patched)
    model = tiny_onnx(tmp_path / "m.onnx")
    out = tmp_path / "deploy" / "m.engine"
    rc = main(["compile", str(model), "--precision", "fp16", "--cache-dir", str(tmp_path / "c"),
               "--max-batch", "4", "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert fakes.builds[-1][1:] == ("fp16", (1, 1, 4))
    assert out.is_file() and ModelSpec.read_sidecar(out).precision == "fp16"
    assert "engine:" in capsys.readouterr().out


def test_module_imports_without_torch() -> None:
    code = (
        "import sys, distill.tensorrt, distill.preflight, distill.quantize; "
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
    from runtime.backends.base import open_backend

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
    with pytest.raises(trt_mod.ModelFileError, match="NoSuchOp"):
        trt_mod.build_engine(tmp_path / "bad.onnx", tmp_path / "bad.engine", "fp32")
