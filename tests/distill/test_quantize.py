"""INT8 Q/DQ quantization (ONNX Runtime static PTQ).

Agreement tolerance with fp32, on 12 drawn images not used for calibration:
- random-weights model (fast test): a deep random network amplifies quantization noise
  (trained weights do not: see the slow test), so the bounds are loose but still catch a
  broken calibration (e.g. wrong input scaling makes the scores constant, correlation NaN):
  class-score maps correlation >= 0.75, box coordinates correlation >= 0.95, mean absolute
  score difference <= 0.08, and >= 50 % of the fp32 detections matched by an int8
  detection of the same class with IoU >= 0.5 (seen here: 0.82, 0.983, 0.051, 65 %).
- briefly trained model (slow test): score correlation >= 0.99, mean |score diff| <= 0.01,
  mean |box diff| <= 1 px, max |score diff| <= 0.05.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from distill.export import compare_detections, export_onnx, synthetic_images
from distill.quantize import CalibrationReader, head_nodes, quantize_int8
from runtime.engine.preflight import check_model
from runtime.errors import ConfigError, DataError
from runtime.model_spec import ModelSpec
from runtime.pipeline import Detector
from runtime.preprocess import Preprocessor
from tests.distill.test_export import random_checkpoint


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quant")
    ckpt = random_checkpoint(root / "student.pt")
    export_onnx(ckpt, root / "student.onnx", validate=False)
    (root / "calib").mkdir()
    for i, img in enumerate(synthetic_images(16, seed=5)):
        cv2.imwrite(str(root / "calib" / f"{i:03d}.png"), img)
    return root


@pytest.fixture(scope="module")
def int8(work: Path):
    return quantize_int8(work / "student.onnx", work / "student.int8.onnx", work / "calib", 16)


def outputs(path: Path, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    spec = ModelSpec.read_sidecar(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pre = Preprocessor(spec)
    boxes, scores = [], []
    for image in images:
        pre(image)
        b, s = sess.run(["boxes", "scores"], {"images": pre.batch(1)})
        boxes.append(b.ravel())
        scores.append(s.ravel())
    return np.concatenate(boxes), np.concatenate(scores)


def test_qdq_model_runs_and_agrees_with_fp32(work: Path, int8) -> None:
    images = synthetic_images(12, seed=99)
    b32, s32 = outputs(work / "student.onnx", images)
    b8, s8 = outputs(int8.path, images)
    assert np.corrcoef(s32, s8)[0, 1] >= 0.75
    assert np.corrcoef(b32, b8)[0, 1] >= 0.95
    assert np.abs(s32 - s8).mean() <= 0.08
    with Detector(work / "student.onnx") as ref, Detector(int8.path) as q:
        assert q.precision == "int8"
        d32 = [ref.detect(im)[0] for im in images]
        d8 = [q.detect(im)[0] for im in images]
    match = compare_detections(d32, d8, 0.5)
    assert match.reference >= 20
    assert match.matched >= 0.5 * match.reference


def test_qdq_graph_is_what_tensorrt_accepts(work: Path, int8) -> None:
    model = onnx.load(str(int8.path))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    assert check_model(model).ok  # INT8, zero points 0, no INT32 DQ
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            assert inits[node.input[2]].data_type == TensorProto.INT8
            assert not numpy_helper.to_array(inits[node.input[2]]).any()
    quantized = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in producer]
    for conv in quantized:  # per-channel weights on axis 0, activations through Q -> DQ
        dq = producer[conv.input[1]]
        scale = numpy_helper.to_array(inits[dq.input[1]])
        assert scale.shape == (numpy_helper.to_array(inits[dq.input[0]]).shape[0],)
        assert producer[conv.input[0]].op_type == "DequantizeLinear"
    assert int8.quantized_convs == len(quantized) == 57 and int8.float_convs == 6
    assert int8.op_counts["QuantizeLinear"] > 50 and int8.op_counts["DequantizeLinear"] > 100
    assert int8.preprocessed == "quant_pre_process"


def test_head_and_decode_tail_stay_float(work: Path, int8) -> None:
    # names found on the exported graph (the quantizer sees it after quant_pre_process)
    float_names = set(head_nodes(onnx.load(str(work / "student.onnx"))))
    assert "/model/head/cls.0/cls.0.2/Conv" in float_names
    assert "/model/head/box.2/box.2.2/Conv" in float_names
    assert {"/Softmax", "/Sigmoid", "/ReduceSum"} <= float_names  # the decode tail
    model = onnx.load(str(int8.path))
    names = {n.name for n in model.graph.node}
    assert float_names & names <= set(int8.excluded)
    for node in model.graph.node:
        if node.name in float_names:
            assert "QuantizeLinear" not in node.op_type
            assert not any(i.endswith("DequantizeLinear_Output") for i in node.input)


def test_metadata_and_sidecar(work: Path, int8) -> None:
    fp32 = ModelSpec.read_sidecar(work / "student.onnx")
    props = {p.key: p.value for p in onnx.load(str(int8.path)).metadata_props}
    spec = ModelSpec.from_metadata_props(props)
    assert spec == ModelSpec.read_sidecar(int8.path) == int8.spec
    assert spec.precision == "int8"
    assert spec.model_hash == fp32.model_hash and spec.class_names == fp32.class_names
    q = spec.extra["quantization"]
    assert q["method"] == "minmax" and q["activations"] == "int8" and q["num_images"] == 16


def test_keep_float_excludes_named_nodes(work: Path) -> None:
    first_conv = next(n.name for n in onnx.load(str(work / "student.onnx")).graph.node
                      if n.op_type == "Conv")  # fmt: skip
    report = quantize_int8(
        work / "student.onnx", work / "keep.onnx", work / "calib", num_images=4,
        keep_float=[first_conv, "/model/neck/*"], method="percentile",
    )  # fmt: skip
    model = onnx.load(str(report.path))
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    kept = [
        n for n in model.graph.node if n.name == first_conv or n.name.startswith("/model/neck/")
    ]
    assert kept and first_conv in report.excluded
    for node in kept:
        assert (
            producer.get(node.input[1] if node.op_type == "Conv" else "", "") != "DequantizeLinear"
        )
    kept_convs = [n for n in kept if n.op_type == "Conv"]  # the stem conv + the neck's
    assert len(kept_convs) > 10 and report.float_convs == 6 + len(kept_convs)
    with pytest.raises(ConfigError, match="matches no node"):
        quantize_int8(work / "student.onnx", work / "x.onnx", work / "calib", 2,
                      keep_float=["/no/such/*"])  # fmt: skip


def test_uint8_variant_is_flagged_for_tensorrt(work: Path) -> None:
    report = quantize_int8(
        work / "student.onnx", work / "u8.onnx", work / "calib", 4, activations="uint8",
        method="entropy",
    )  # fmt: skip
    assert report.spec.extra["quantization"]["activations"] == "uint8"
    problems = check_model(onnx.load(str(report.path))).problems
    assert problems and all("UINT8" in p.what or "INT32" in p.what for p in problems)
    sess = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = np.zeros((1, 3, 160, 160), np.float32)
    assert sess.run(["scores"], {"images": x})[0].shape[0] == 1


def test_calibration_reader_feeds_the_runtime_preprocessing(work: Path) -> None:
    spec = ModelSpec.read_sidecar(work / "student.onnx")
    paths = sorted((work / "calib").iterdir())[:2]
    reader = CalibrationReader(paths, spec, "images")
    pre = Preprocessor(spec)
    for path in paths:
        pre(cv2.imread(str(path)), 0, "BGR")
        np.testing.assert_array_equal(reader.get_next()["images"], pre.batch(1))
    assert reader.get_next() is None


def test_bad_inputs(work: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no calibration images"):
        quantize_int8(work / "student.onnx", tmp_path / "q.onnx", tmp_path, 4)
    with pytest.raises(ConfigError, match="method"):
        quantize_int8(work / "student.onnx", tmp_path / "q.onnx", work / "calib", 4, method="kl")


def test_cli_on_a_truncated_onnx(work: Path, tmp_path: Path, capsys) -> None:
    from runtime.cli import main

    data = (work / "student.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 3])
    rc = main(
        ["quantize", str(cut), "--images", str(work / "calib"), "--out", str(tmp_path / "q.onnx")]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(cut) in err


@pytest.mark.slow
def test_trained_model_quantizes_closely(tmp_path: Path) -> None:
    """A nano fit for 40 steps on drawn shapes: int8 within tight bounds of fp32."""
    import torch

    from distill.checkpoint import make_checkpoint, save_atomic
    from distill.losses.detection import detection_loss
    from distill.models.presets import PRESETS, build

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images, targets = [], []
    for i in range(16):
        img = np.full((160, 160, 3), rng.integers(40, 200, 3), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            c, r = int(rng.integers(3)), int(rng.integers(12, 40))
            x, y = (int(v) for v in rng.integers(r, 160 - r, 2))
            color = tuple(int(v) for v in rng.integers(0, 256, 3))
            if c == 0:
                cv2.rectangle(img, (x - r, y - r), (x + r, y + r), color, -1)
            elif c == 1:
                cv2.circle(img, (x, y), r, color, -1)
            else:
                pts = np.array([[x, y - r], [x - r, y + r], [x + r, y + r]], np.int32)
                cv2.fillPoly(img, [pts], color)
            targets.append([i, c, x - r, y - r, x + r, y + r])
        images.append(img)
    batch = torch.from_numpy(np.stack(images)[..., ::-1].transpose(0, 3, 1, 2) / 255.0).float()
    t = torch.tensor(targets, dtype=torch.float32)
    model = build("nano", 3).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss, _, _ = detection_loss(model(batch), t, model.strides)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ckpt = make_checkpoint(model.eval(), preset="nano", scale=PRESETS["nano"],
                           class_names=("a", "b", "c"), img_size=160)  # fmt: skip
    save_atomic(ckpt, tmp_path / "fit.pt")
    export_onnx(tmp_path / "fit.pt", tmp_path / "fit.onnx", validate=False)
    (tmp_path / "calib").mkdir()
    for i, img in enumerate(synthetic_images(24, seed=5)):
        cv2.imwrite(str(tmp_path / "calib" / f"{i:03d}.png"), img)
    report = quantize_int8(tmp_path / "fit.onnx", tmp_path / "fit.int8.onnx", tmp_path / "calib")
    test_images = synthetic_images(12, seed=99)
    b32, s32 = outputs(tmp_path / "fit.onnx", test_images)
    b8, s8 = outputs(report.path, test_images)
    assert np.corrcoef(s32, s8)[0, 1] >= 0.99
    assert np.abs(s32 - s8).mean() <= 0.01 and np.abs(s32 - s8).max() <= 0.05
    assert np.abs(b32 - b8).mean() <= 1.0


def test_cli_calibrates_on_a_dataset(work: Path, tmp_path: Path, capsys) -> None:
    from runtime.cli import main

    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    for i, img in enumerate(synthetic_images(3, seed=8)):
        cv2.imwrite(str(tmp_path / "images" / "train" / f"{i}.png"), img)
        (tmp_path / "labels" / "train" / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("names: [disc, square, tri]\ntrain: images/train\n")
    out = tmp_path / "q.onnx"
    rc = main(["quantize", str(work / "student.onnx"), "--data", str(tmp_path), "--out", str(out),
               "--num-images", "2", "--keep-float", "/model/backbone/stem/*"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "calibration on 2 images" in printed and "QuantizeLinear" in printed
    assert "speed: this is the TensorRT placement" in printed  # the default --activations int8
    spec = ModelSpec.read_sidecar(out)
    assert spec.precision == "int8" and spec.extra["quantization"]["num_images"] == 2


def test_speed_hint_follows_the_cpu() -> None:
    from distill.quantize import speed_hint

    assert "should beat fp32" in speed_hint("uint8", {"avx2", "avx512f", "avx512_vnni"})
    assert "should beat fp32" in speed_hint("uint8", {"avx2", "avx_vnni"})
    assert "no VNNI" in speed_hint("uint8", {"avx2", "fma"})
    assert "TensorRT placement" in speed_hint("int8", {"avx2", "avx512_vnni"})
    assert "unknown" in speed_hint("uint8", set())
