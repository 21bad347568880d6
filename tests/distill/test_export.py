"""Checkpoint -> ONNX export: parity with torch, metadata, graph hygiene, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from distill.checkpoint import load_detector, make_checkpoint, save_atomic, spec_for, weights_hash
from distill.export import compare_detections, export_onnx, synthetic_images
from distill.models.presets import PRESETS, build
from runtime.cli import main
from runtime.engine.preflight import check_model, float64_problems
from runtime.model_spec import ModelSpec
from runtime.types import Detections

SIZE = 160


def random_checkpoint(path: Path, seed: int = 0) -> Path:
    """A nano detector (3 classes, 160 px) with random weights whose outputs vary: BatchNorm
    statistics measured on drawn images, class/box logits scaled to spread the scores."""
    torch.manual_seed(seed)
    model = build("nano", 3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: exact statistics of the batch below
            m.reset_running_stats()
    images = np.stack(synthetic_images(8, seed=seed + 1, size=(SIZE, SIZE)))
    x = torch.from_numpy(images[..., ::-1].transpose(0, 3, 1, 2) / 255.0).float()
    model.train()
    with torch.no_grad():
        model(x)
        for branch in model.head.cls:
            branch[-1].bias.fill_(-2.0)
            branch[-1].weight.mul_(3.0)
        for branch in model.head.box:
            branch[-1].weight.mul_(3.0)
    model.eval()
    ckpt = make_checkpoint(
        model, preset="nano", scale=PRESETS["nano"], class_names=("disc", "square", "tri"),
        img_size=SIZE, teacher="teachers/large.pt",
    )  # fmt: skip
    return save_atomic(ckpt, path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "student.pt")


@pytest.fixture(scope="module")
def exported(ckpt: Path, tmp_path_factory: pytest.TempPathFactory):
    return export_onnx(ckpt, tmp_path_factory.mktemp("onnx") / "student.onnx")


def test_parity_torch_vs_onnxruntime(exported) -> None:
    parity = exported.parity
    assert parity is not None and parity.passed, parity.summary()
    assert parity.images == 8
    assert parity.max_abs_diff["boxes"] < 0.05  # network pixels
    assert parity.max_abs_diff["scores"] < 1e-4
    d = parity.detections
    assert d.reference > 10, "the test model must produce detections"
    assert d.reference == d.other == d.matched
    assert d.min_iou >= 0.99 and d.max_score_diff <= 1e-3


def test_graph_is_tensorrt_friendly(exported) -> None:
    model = onnx.load(str(exported.path))
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops
    assert not {"Range", "ConstantOfShape", "Expand"} & ops  # the anchor grid is a constant
    assert float64_problems(model) == []
    assert check_model(model).ok
    assert model.opset_import[0].version == 17
    (inp,) = model.graph.input
    assert inp.name == "images"
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, SIZE, SIZE]
    a = exported.spec.num_anchors
    outs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert outs == {"boxes": [1, a, 4], "scores": [1, a, 3]}


def test_metadata_round_trip(exported, ckpt: Path) -> None:
    model, info = load_detector(ckpt)
    expected = dataclasses.replace(
        spec_for(model, info, SIZE, str(ckpt)), precision="fp32",
        extra={"opset": 17, "dynamic_batch": False, "torch_version": torch.__version__},
    )  # fmt: skip
    props = {p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}
    from_props = ModelSpec.from_metadata_props(props)
    from_sidecar = ModelSpec.read_sidecar(exported.path)
    assert from_props == from_sidecar == expected == exported.spec
    assert from_props.teacher == "teachers/large.pt"
    assert from_props.source_checkpoint == str(ckpt)
    assert from_props.model_hash == weights_hash(model)
    assert from_props.class_names == ("disc", "square", "tri")
    assert sorted(p.name for p in exported.path.parent.iterdir()) == [
        "student.onnx", "student.onnx.json",
    ]  # written atomically: no temp files left  # fmt: skip


def test_dynamic_batch_raw_layout_via_cli(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import onnxruntime as ort

    out = tmp_path / "raw.onnx"
    rc = main(["export", str(ckpt), "--out", str(out), "--size", str(SIZE), "--dynamic-batch",
               "--layout", "raw_dfl"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "parity on 8 images" in printed and "PASSED" in printed
    spec = ModelSpec.read_sidecar(out)
    assert spec.output_layout == "raw_dfl" and spec.extra["dynamic_batch"] is True
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((3, 3, SIZE, SIZE), dtype=np.float32)
    dist3, cls3 = sess.run(["box_dist", "cls_logits"], {"images": x})
    dist1, cls1 = sess.run(["box_dist", "cls_logits"], {"images": x[1:2]})
    assert dist3.shape == (3, spec.num_anchors, 4 * spec.reg_max)
    assert cls1.shape == (1, spec.num_anchors, 3)
    np.testing.assert_allclose(dist3[1:2], dist1, atol=1e-4)
    np.testing.assert_allclose(cls3[1:2], cls1, atol=1e-4)


def test_compare_detections_matches_by_class_and_iou() -> None:
    a = Detections(
        np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32),
        np.array([0.9, 0.8], np.float32), np.array([0, 1], np.int32),
    )  # fmt: skip
    shifted = Detections(a.boxes + 1, a.scores - 0.01, a.class_ids)
    relabelled = Detections(a.boxes, a.scores, np.array([1, 0], np.int32))
    m = compare_detections([a], [shifted], 0.5)
    assert (m.reference, m.other, m.matched) == (2, 2, 2)
    assert 0.6 < m.min_iou < 0.9 and m.max_score_diff == pytest.approx(0.01, abs=1e-6)
    assert compare_detections([a], [shifted], 0.99).matched == 0
    assert compare_detections([a], [relabelled], 0.5).matched == 0


def _one_line_error(capsys: pytest.CaptureFixture, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_wrong_kind_truncated_missing_checkpoints(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    wrong = tmp_path / "optimizer.pt"
    torch.save({"state": {}, "param_groups": []}, wrong)
    cut = tmp_path / "cut.pt"
    data = ckpt.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    for path in (wrong, cut, tmp_path / "missing.pt"):
        assert main(["export", str(path), "--out", str(tmp_path / "x.onnx")]) == 2
        _one_line_error(capsys, str(path))
    assert not (tmp_path / "x.onnx").exists()


def test_unwritable_output_path(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    out = blocker / "sub" / "student.onnx"
    assert main(["export", str(ckpt), "--out", str(out), "--no-validate"]) == 2
    _one_line_error(capsys, str(out), "cannot write")
    assert main(["export", str(ckpt), "--out", str(tmp_path), "--no-validate"]) == 2
    _one_line_error(capsys, str(tmp_path), "directory")


def test_bad_size_is_a_config_error(ckpt: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(ckpt), "--out", str(tmp_path / "s.onnx"), "--size", "100"]) == 2
    _one_line_error(capsys, "multiple of 32")
