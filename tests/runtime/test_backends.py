from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest

from runtime.backends import Backend, open_backend
from runtime.errors import BackendUnavailable, ConfigError, InputError, ModelFileError
from runtime.model_spec import ModelSpec
from tests.runtime.tiny_models import build_conv_model, build_fixed_model, make_spec

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def batch_of(n: int, seed: int = 0, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, *size), dtype=np.float32)


def test_onnxruntime_backend_basics(raw_model: Path):
    b = open_backend(raw_model, threads=1)
    assert isinstance(b, Backend)
    assert (b.name, b.precision, b.input_dtype, b.max_batch) == (
        "onnxruntime",
        "fp32",
        np.float32,
        32,
    )
    assert b.spec == make_spec()
    assert b.providers == ["CPUExecutionProvider"]
    out = b.infer(batch_of(1))
    assert set(out) == {"box_dist", "cls_logits"}
    assert out["box_dist"].shape == (1, b.spec.num_anchors, 16)
    assert out["cls_logits"].shape == (1, b.spec.num_anchors, 3)
    b.close()


def test_dynamic_batch_matches_single_images(decoded_model: Path):
    b = open_backend(decoded_model, max_batch=4)
    assert b.max_batch == 4
    x = batch_of(3, seed=1)
    together = b.infer(x)
    for i in range(3):
        alone = b.infer(x[i : i + 1])
        for name in ("boxes", "scores"):
            np.testing.assert_allclose(together[name][i], alone[name][0], rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match=r"1 <= B <= 4"):
        b.infer(batch_of(5))


def test_static_batch_models(tmp_path: Path):
    one = open_backend(build_conv_model(tmp_path / "b1.onnx", make_spec(), batch=1))
    assert one.max_batch == 1
    with pytest.raises(InputError, match="got \\(2, 3, 64, 64\\)"):
        one.infer(batch_of(2))
    two = open_backend(build_conv_model(tmp_path / "b2.onnx", make_spec(), batch=2))
    assert two.max_batch == 2
    x = batch_of(2, seed=2)
    full = two.infer(x)
    part = two.infer(x[:1])  # padded to the static batch, sliced back
    assert part["box_dist"].shape[0] == 1
    np.testing.assert_allclose(part["box_dist"][0], full["box_dist"][0], rtol=1e-6)
    np.testing.assert_allclose(
        part["box_dist"][0], one.infer(x[:1])["box_dist"][0], rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (
            np.zeros((1, 3, 32, 32), np.float32),
            r"expected shape \(B, 3, 64, 64\).*got \(1, 3, 32, 32\)",
        ),
        (np.zeros((3, 64, 64), np.float32), r"got \(3, 64, 64\)"),
        (np.zeros((1, 64, 64, 3), np.float32), r"got \(1, 64, 64, 3\)"),
        (np.zeros((0, 3, 64, 64), np.float32), r"got \(0, 3, 64, 64\)"),
        (np.zeros((1, 3, 64, 64), np.float64), "expected dtype float32, got float64"),
        (np.zeros((1, 3, 64, 64), np.uint8), "expected dtype float32, got uint8"),
        ([[0.0]], "numpy array"),
    ],
)
def test_wrong_input_raises_input_error(raw_model: Path, batch, message):
    b = open_backend(raw_model)
    with pytest.raises(InputError, match=message):
        b.infer(batch)


def test_missing_and_unknown_files(tmp_path: Path):
    with pytest.raises(ModelFileError, match=r"nope\.onnx: model file not found"):
        open_backend(tmp_path / "nope.onnx")
    with pytest.raises(ModelFileError, match="is a directory"):
        open_backend(tmp_path)
    weird = tmp_path / "model.tflite"
    weird.write_bytes(b"x")
    with pytest.raises(ModelFileError, match=r"model\.tflite: unknown model file type '\.tflite'"):
        open_backend(weird)


def test_truncated_and_garbage_onnx(raw_model: Path, tmp_path: Path):
    data = raw_model.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ModelFileError, match=r"truncated\.onnx: ONNX Runtime cannot load it.*re-export"
    ):
        open_backend(truncated)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xff" * 1000)
    with pytest.raises(ModelFileError, match=r"garbage\.onnx"):
        open_backend(garbage)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"empty\.onnx"):
        open_backend(empty)


def test_spec_from_sidecar_when_metadata_missing(tmp_path: Path):
    path = build_conv_model(tmp_path / "bare.onnx", make_spec(), with_metadata=False)
    with pytest.raises(
        ModelFileError, match=r"no Understudy metadata and no sidecar bare\.onnx\.json"
    ):
        open_backend(path)
    spec = make_spec(precision="int8")
    spec.write_sidecar(path)
    assert open_backend(path).spec == spec


def test_model_that_does_not_match_its_spec(tmp_path: Path):
    # metadata says raw_dfl but the graph emits decoded outputs
    path = build_conv_model(tmp_path / "m.onnx", make_spec(output_layout="decoded_xyxy"))
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, make_spec().to_metadata_props())
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError, match="lack"):
        open_backend(path)
    # metadata says 32x32 but the graph takes 64x64
    path2 = build_conv_model(tmp_path / "m2.onnx", make_spec())
    model = onnx.load(str(path2))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, make_spec(input_size=(32, 32)).to_metadata_props())
    onnx.save(model, str(path2))
    with pytest.raises(ModelFileError, match="does not match the spec"):
        open_backend(path2)


def test_backend_choice_errors(raw_model: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="backend must be one of"):
        open_backend(raw_model, backend="openvino")
    with pytest.raises(ConfigError, match="device must be one of"):
        open_backend(raw_model, device="tpu")
    with pytest.raises(ModelFileError, match=r"the torch backend cannot run a \.onnx file"):
        open_backend(raw_model, backend="torch")
    with pytest.raises(BackendUnavailable, match="execution providers"):
        open_backend(raw_model, providers=["NoSuchExecutionProvider"])


def test_cuda_device_falls_back_to_cpu_with_a_warning(raw_model: Path, caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    b = open_backend(raw_model, device="cuda")
    assert b.providers == ["CPUExecutionProvider"]
    assert "running on the CPU" in caplog.text


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_tensorrt_missing_is_a_clear_error(raw_model: Path, tmp_path: Path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(BackendUnavailable, match="NVIDIA TensorRT"):
        open_backend(engine)
    with pytest.raises(BackendUnavailable, match="NVIDIA TensorRT"):
        open_backend(raw_model, backend="tensorrt")


# -- torch backend: a stand-in checkpoint loader, found through the real entry point (a fake
# distill.checkpoint module) or passed explicitly; and what happens without a loader --------


def torch_twin(onnx_path: Path):
    """A torch module computing the same as ``build_conv_model(..., decoded_xyxy)``."""
    torch = pytest.importorskip("torch")
    from onnx import numpy_helper

    from runtime.postprocess import make_anchors

    model = onnx.load(str(onnx_path))
    w = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
    spec = ModelSpec.from_metadata_props({p.key: p.value for p in model.metadata_props})
    points, strides = (torch.from_numpy(a) for a in make_anchors(spec.input_size, spec.strides))
    r = spec.reg_max

    class Twin(torch.nn.Module):
        def forward(self, x):
            levels = []
            for s in spec.strides:
                y = torch.nn.functional.avg_pool2d(x, s, s)
                y = torch.nn.functional.conv2d(y, w[f"w{s}"], w[f"b{s}"])
                levels.append(y.flatten(2).transpose(1, 2))
            out = torch.cat(levels, 1)
            dist, logits = out[..., : 4 * r], out[..., 4 * r :]
            p = dist.reshape(x.shape[0], -1, 4, r).softmax(-1)
            d = (p * torch.arange(r, dtype=torch.float32)).sum(-1) * strides[:, None]
            boxes = torch.cat([points - d[..., :2], points + d[..., 2:]], -1)
            return boxes, logits.sigmoid()

    return Twin(), spec


@pytest.fixture
def fake_checkpoint_loader(monkeypatch: pytest.MonkeyPatch, decoded_model: Path):
    twin, spec = torch_twin(decoded_model)
    calls = []

    def load_for_inference(path):
        calls.append(Path(path))
        if Path(path).read_bytes() == b"bad":
            raise KeyError("model")
        return twin, spec

    fake = types.ModuleType("distill.checkpoint")
    fake.load_for_inference = load_for_inference
    monkeypatch.setitem(sys.modules, "distill.checkpoint", fake)
    return calls


def test_torch_backend_matches_onnxruntime(
    fake_checkpoint_loader, decoded_model: Path, tmp_path: Path
):
    ckpt = tmp_path / "student.pt"
    ckpt.write_bytes(b"weights")
    tb = open_backend(ckpt, max_batch=4)
    assert fake_checkpoint_loader == [ckpt]
    assert (tb.name, tb.precision, tb.max_batch, tb.spec.output_layout) == (
        "torch",
        "fp32",
        4,
        "decoded_xyxy",
    )
    ob = open_backend(decoded_model)
    x = batch_of(2, seed=3)
    t, o = tb.infer(x), ob.infer(x)
    for name in ("boxes", "scores"):
        np.testing.assert_allclose(t[name], o[name], rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError):
        tb.infer(x.astype(np.float64))


def test_torch_backend_load_errors(fake_checkpoint_loader, tmp_path: Path, monkeypatch):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"bad")
    with pytest.raises(ModelFileError, match=r"bad\.pt: cannot load this checkpoint \(KeyError"):
        open_backend(bad)
    monkeypatch.setitem(sys.modules, "distill.checkpoint", None)  # import fails
    with pytest.raises(BackendUnavailable, match=r"distill\.checkpoint"):
        open_backend(bad)


def test_torch_backend_takes_an_explicit_loader(decoded_model: Path, tmp_path: Path):
    from runtime.backends.torch import TorchBackend

    twin, spec = torch_twin(decoded_model)
    seen = []

    def loader(path: Path):
        seen.append(path)
        return twin, spec

    ckpt = tmp_path / "student.pt"
    ckpt.write_bytes(b"weights")
    b = TorchBackend(ckpt, loader=loader, max_batch=2)
    assert seen == [ckpt] and (b.max_batch, b.spec.class_names) == (2, spec.class_names)
    out = b.infer(batch_of(2))
    assert out["boxes"].shape == (2, spec.num_anchors, 4)


def test_checkpoint_loader_entry_point_resolves_in_this_install():
    pytest.importorskip("torch")
    from distill.checkpoint import load_for_inference
    from runtime.backends.torch import find_loader

    assert find_loader() is load_for_inference


def test_missing_or_broken_checkpoint_loader_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    import importlib.metadata as md

    pytest.importorskip("torch")  # without torch the backend says so first
    from runtime.backends.torch import LOADER_GROUP

    ckpt = tmp_path / "student.pt"
    ckpt.write_bytes(b"weights")
    monkeypatch.setattr(md, "entry_points", lambda **kw: [])
    with pytest.raises(BackendUnavailable) as missing:
        open_backend(ckpt)
    broken = md.EntryPoint("understudy", "no_such_loader_module:load", LOADER_GROUP)
    other = md.EntryPoint("another", "json:loads", LOADER_GROUP)
    monkeypatch.setattr(md, "entry_points", lambda **kw: [other, broken])
    with pytest.raises(BackendUnavailable) as unloadable:
        open_backend(ckpt)  # the one named "understudy" is chosen, and it fails to import
    for err, what in ((missing, LOADER_GROUP), (unloadable, "no_such_loader_module:load")):
        msg = str(err.value)
        assert "\n" not in msg and what in msg, msg
        assert "pip install 'understudy[train]'" in msg and ".onnx" in msg, msg


# -- TensorRT (only where it is installed) ---------------------------------------------


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_engine_matches_onnxruntime(decoded_model: Path, tmp_path: Path):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(decoded_model.read_bytes()), [
        parser.get_error(i) for i in range(parser.num_errors)
    ]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    assert blob is not None
    engine = tmp_path / "decoded.engine"
    engine.write_bytes(bytes(blob))
    make_spec(output_layout="decoded_xyxy").write_sidecar(engine)

    tb = open_backend(engine)
    ob = open_backend(decoded_model)
    assert (tb.name, tb.max_batch) == ("tensorrt", 4)
    for n in (1, 3, 1):  # shape changes within the profile
        x = batch_of(n, seed=n)
        t, o = tb.infer(x), ob.infer(x)
        for name in ("boxes", "scores"):
            np.testing.assert_allclose(t[name], o[name], rtol=1e-3, atol=1e-3)
    with pytest.raises(InputError):
        tb.infer(batch_of(5))
    tb.close()
    corrupt = tmp_path / "corrupt.engine"
    corrupt.write_bytes(engine.read_bytes()[:100])
    make_spec(output_layout="decoded_xyxy").write_sidecar(corrupt)
    with pytest.raises(ModelFileError, match="cannot deserialize"):
        open_backend(corrupt)


def test_fixed_model_helper_broadcasts_over_batch(tmp_path: Path):
    spec = make_spec(output_layout="decoded_xyxy")
    boxes = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32)
    scores = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], np.float32)
    b = open_backend(build_fixed_model(tmp_path / "f.onnx", spec, boxes, scores))
    out = b.infer(batch_of(3))
    np.testing.assert_array_equal(out["boxes"], np.broadcast_to(boxes, (3, 2, 4)))
    np.testing.assert_array_equal(out["scores"], np.broadcast_to(scores, (3, 2, 3)))
