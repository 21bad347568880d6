"""The engine cache: key, lookup, invalidation, atomic writes, corrupt files, and
``understudy compile`` on top of it, with a fake builder, deserializer and machine."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

import runtime.engine.cache as cache_mod
from runtime.cli import main
from runtime.engine.cache import build_or_load_engine, engine_cache_key
from runtime.errors import ConfigError, UnderstudyError
from runtime.model_spec import ModelSpec
from tests.runtime.engine.engine_fakes import SPEC, Fakes, tiny_onnx


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
    onnx_hash = cache_mod.file_hash(model)
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
    ModelSpec.read_sidecar(engine)  # a valid sidecar was rewritten each time
    (engine.parent / (engine.name + ".json")).write_text("{not json")
    fakes.call(model, "fp16", tmp_path)
    assert len(fakes.builds) == 4 and "sidecar" in fakes.messages[-1]


def test_failed_build_leaves_nothing_and_is_retried(fakes: Fakes, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")

    def failing(*a, **kw):
        raise UnderstudyError("TensorRT could not build")

    with pytest.raises(UnderstudyError):
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


def test_cli_compile_with_fakes(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    patched = functools.partial(
        build_or_load_engine, builder=fakes.builder, validate=lambda p: True,
        environment=lambda: tuple(fakes.env),
    )  # fmt: skip
    monkeypatch.setattr(cache_mod, "build_or_load_engine", patched)
    model = tiny_onnx(tmp_path / "m.onnx")
    out = tmp_path / "deploy" / "m.engine"
    rc = main(["compile", str(model), "--precision", "fp16", "--cache-dir", str(tmp_path / "c"),
               "--max-batch", "4", "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert fakes.builds[-1][1:] == ("fp16", (1, 1, 4))
    assert out.is_file() and ModelSpec.read_sidecar(out).precision == "fp16"
    assert "engine:" in capsys.readouterr().out
