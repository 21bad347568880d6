"""The TensorRT backend's logic against a stand-in for the TensorRT 10 runtime API.

TensorRT is not installed on the CI machine. These tests replace ``tensorrt`` with a
small fake that offers the name-based API the backend uses (num_io_tensors,
get_tensor_name/mode/shape/dtype, get_tensor_profile_shape, set_input_shape,
set_tensor_address, execute_async_v3) and replace CUDA memory with host arrays; the
fake "engine" runs the ONNX model with ONNX Runtime. They check buffer binding, shapes,
dynamic and static batches and errors. The real engine is tested in test_backends.py
(marked tensorrt).
"""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import runtime.backends.tensorrt as trt_backend
import runtime.engine.cache as engine_cache
from runtime.backends import open_backend
from runtime.errors import InputError, ModelFileError
from tests.runtime.tiny_models import make_spec

ENGINE_BYTES = b"fake-engine:"


class FakeCuda:
    """Device memory as host byte arrays keyed by fake pointers."""

    memory: ClassVar[dict[int, np.ndarray]] = {}

    def __init__(self) -> None:
        self.handle = 7
        self.synced = 0

    @contextlib.contextmanager
    def active(self):
        yield

    def device(self, nbytes: int) -> int:
        ptr = 0x1000 * (len(FakeCuda.memory) + 1)
        FakeCuda.memory[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def pinned(self, shape, dtype) -> np.ndarray:
        return np.zeros(shape, dtype)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        FakeCuda.memory[dst][: src.nbytes] = np.ascontiguousarray(src).reshape(-1).view(np.uint8)

    def d2h(self, dst: np.ndarray, src: int) -> None:
        dst.reshape(-1).view(np.uint8)[:] = FakeCuda.memory[src][: dst.nbytes]

    def sync(self) -> None:
        self.synced += 1

    def close(self) -> None:
        pass


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.shapes = {"images": engine.shapes["images"]}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape) -> bool:
        lo, _, hi = self.engine.profile
        assert lo[0] <= shape[0] <= hi[0], shape
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str):
        if name == "images":
            return self.shapes[name]
        b = self.shapes["images"][0]
        assert b != -1, "input shape not set"
        return (b, *self.engine.shapes[name][1:])

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        assert set(self.addresses) == set(self.engine.shapes), "every IO tensor needs an address"
        shape = self.shapes["images"]
        raw = FakeCuda.memory[self.addresses["images"]][: int(np.prod(shape)) * 4]
        outs = self.engine.session.infer(raw.view(np.float32).reshape(shape))
        for name, value in outs.items():
            flat = value.astype(np.float32).reshape(-1).view(np.uint8)
            FakeCuda.memory[self.addresses[name]][: flat.size] = flat
        return True


class FakeEngine:
    def __init__(self, onnx_path: Path, batch: int | None):
        self.session = open_backend(onnx_path, max_batch=8)  # computes the real answers
        a, c = self.session.spec.num_anchors, self.session.spec.num_classes
        b = -1 if batch is None else batch
        self.shapes = {"images": (b, 3, 64, 64), "boxes": (b, a, 4), "scores": (b, a, c)}
        self.profile = ((1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))
        if batch is not None:
            self.profile = ((batch, 3, 64, 64),) * 3
        self.num_io_tensors = 3

    def get_tensor_name(self, i: int) -> str:
        return list(self.shapes)[i]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name == "images" else "output"

    def get_tensor_shape(self, name: str):
        return self.shapes[name]

    def get_tensor_dtype(self, name: str):
        return np.float32

    def get_tensor_profile_shape(self, name: str, profile: int):
        return self.profile

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch, decoded_model: Path):
    """Installs the fakes; engine files hold ENGINE_BYTES + "dynamic" or a static batch."""

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob: bytes):
            if not blob.startswith(ENGINE_BYTES):
                return None
            kind = blob[len(ENGINE_BYTES) :].decode()
            return FakeEngine(decoded_model, None if kind == "dynamic" else int(kind))

    trt = types.SimpleNamespace(
        __version__="10.3-fake",
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Runtime=Runtime,
        TensorIOMode=types.SimpleNamespace(INPUT="input", OUTPUT="output"),
        nptype=lambda dtype: dtype,
    )
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_backend, "_cuda", FakeCuda)
    FakeCuda.memory.clear()
    return trt


def write_engine(path: Path, kind: str, with_sidecar: bool = True) -> Path:
    path.write_bytes(ENGINE_BYTES + kind.encode())
    if with_sidecar:
        make_spec(output_layout="decoded_xyxy", precision="fp16").write_sidecar(path)
    return path


def batch_of(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 64, 64), dtype=np.float32)


def test_dynamic_engine_matches_onnxruntime(fake_trt, decoded_model: Path, tmp_path: Path):
    b = open_backend(write_engine(tmp_path / "m.engine", "dynamic"))
    assert (b.name, b.precision, b.max_batch, b.input_dtype) == ("tensorrt", "fp16", 4, np.float32)
    ort = open_backend(decoded_model)
    for n in (1, 3, 3, 1, 4):
        x = batch_of(n, seed=n)
        got, want = b.infer(x), ort.infer(x)
        assert set(got) == {"boxes", "scores"}
        for name in got:
            assert got[name].shape == want[name].shape
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
    assert b._batch == 4
    with pytest.raises(InputError, match=r"1 <= B <= 4"):
        b.infer(batch_of(5, 0))
    with pytest.raises(InputError, match="float32"):
        b.infer(batch_of(1, 0).astype(np.float16))
    b.close()


def test_static_engine_pads_to_its_batch(fake_trt, decoded_model: Path, tmp_path: Path):
    b = open_backend(write_engine(tmp_path / "s.plan", "2"))
    assert b.max_batch == 2
    x = batch_of(1, seed=4)
    got = b.infer(x)
    assert got["boxes"].shape[0] == 1
    np.testing.assert_allclose(
        got["scores"], open_backend(decoded_model).infer(x)["scores"], atol=1e-5
    )


def test_engine_errors(fake_trt, tmp_path: Path):
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"\x00" * 64)
    make_spec(output_layout="decoded_xyxy").write_sidecar(bad)
    with pytest.raises(ModelFileError, match=r"bad\.engine: TensorRT .* cannot deserialize"):
        open_backend(bad)
    with pytest.raises(ModelFileError, match="sidecar not found"):
        open_backend(write_engine(tmp_path / "nospec.engine", "dynamic", with_sidecar=False))
    wrong = write_engine(tmp_path / "wrong.engine", "dynamic")
    make_spec(output_layout="raw_dfl").write_sidecar(wrong)  # engine emits boxes/scores
    with pytest.raises(ModelFileError, match="lack"):
        open_backend(wrong)


def test_onnx_with_tensorrt_goes_through_the_engine_cache(
    fake_trt, decoded_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls = []

    def build_or_load_engine(onnx_path, precision, cache_dir, **kw):
        calls.append((Path(onnx_path), precision, Path(cache_dir)))
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return write_engine(Path(cache_dir) / "x.engine", "dynamic", with_sidecar=False)

    monkeypatch.setattr(engine_cache, "build_or_load_engine", build_or_load_engine)
    b = open_backend(decoded_model, backend="tensorrt", precision="fp16", cache_dir=tmp_path / "c")
    assert calls == [(decoded_model, "fp16", tmp_path / "c")]
    assert (b.name, b.precision) == ("tensorrt", "fp16")
    assert b.spec.class_names == make_spec().class_names  # from the ONNX metadata
    b2 = open_backend(decoded_model, backend="tensorrt", cache_dir=tmp_path / "c")
    assert b2.precision == "fp32"  # default: the model's own precision
