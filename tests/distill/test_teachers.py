"""External teachers of other layouts, built here as real ONNX graphs: a trained model of
this project wrapped as a single-output YOLO, DETR or boxes+scores graph (its expected
outputs are the model's own), and a "rectangle finder" whose one detection is exactly the
bright rectangle of its input (for the letterbox geometry, at non-square inputs)."""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from distill.config import load
from distill.distillation import DistillConfig, distill
from distill.teachers import NativeTeacher, OnnxTeacher, OutputLayout
from distill.teachers.external import providers_for
from distill.teachers.wrap import export_wrapped
from runtime.errors import ConfigError

BASE = ["model=nano", "img_size=64", "batch_size=4", "epochs=1", "max_steps=1", "bf16=off"]


class RectFinder(nn.Module):
    """(B, 3, H, W) -> the extent of the pixels whose red channel exceeds 0.5, as candidate
    0 (score 0.9 for class 1 of 2; two empty candidates beside it), in the ``kind`` layout."""

    def __init__(self, kind: str, hw: tuple[int, int]) -> None:
        super().__init__()
        self.kind = kind
        self.register_buffer("ar_h", torch.arange(hw[0], dtype=torch.float32))
        self.register_buffer("ar_w", torch.arange(hw[1], dtype=torch.float32))
        self.register_buffer("wh", torch.tensor([hw[1], hw[0]] * 2, dtype=torch.float32))

    def forward(self, x: torch.Tensor):
        m = (x[:, 0] > 0.5).float()
        col, row = m.amax(1), m.amax(2)
        x1 = (self.ar_w + (1 - col) * 1e4).amin(1)
        x2 = (self.ar_w * col).amax(1) + 1
        y1 = (self.ar_h + (1 - row) * 1e4).amin(1)
        y2 = (self.ar_h * row).amax(1) + 1
        cxcywh = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1)  # (B, 4)
        b = x.shape[0]
        scores = torch.tensor([0.0, 0.9]).expand(b, 2)
        cand = torch.cat([cxcywh, scores], 1)  # (B, 6)
        empty = torch.zeros_like(cand)
        if self.kind == "yolo":
            return torch.stack([cand, empty, empty], 2)  # (B, 4 + C, 3)
        boxes = torch.stack([cxcywh / self.wh, empty[:, :4], empty[:, :4]], 1)
        probs = torch.stack([scores, empty[:, 4:], empty[:, 4:]], 1)
        logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6))
        return logits, boxes


def export_finder(kind: str, hw: tuple[int, int], path: Path) -> Path:
    names = ["output0"] if kind == "yolo" else ["logits", "pred_boxes"]
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            RectFinder(kind, hw), (torch.zeros(1, 3, *hw),), buf, dynamo=False,
            opset_version=17, input_names=["images"], output_names=names,
        )  # fmt: skip
    model = onnx.load_from_string(buf.getvalue())
    if kind == "yolo":  # the Ultralytics way of naming classes; the DETR one uses a layout
        entry = model.metadata_props.add()
        entry.key, entry.value = "names", "{0: 'a', 1: 'b'}"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("kind", ["yolo", "detr"])
@pytest.mark.parametrize("hw", [(96, 160), (160, 96), (192, 320)])
def test_letterboxed_teacher_boxes_map_back_within_a_pixel(
    kind: str, hw: tuple[int, int], tmp_path: Path
) -> None:
    path = export_finder(kind, hw, tmp_path / f"{kind}.onnx")
    layout = OutputLayout(class_names=("a", "b")) if kind == "detr" else None
    teacher = OnnxTeacher(path, ("a", "b"), layout)
    assert teacher.kind == kind and teacher.input_hw == hw
    # a training batch: 128x128 student input with a rectangle at [30, 40, 90, 70]
    x = torch.full((2, 3, 128, 128), 0.2)
    x[0, :, 40:70, 30:90] = 1.0
    x[1, :, 5:120, 100:110] = 1.0
    out = teacher(x)
    best = out.scores.amax(-1).argmax(1)
    for i, box in enumerate([[30, 40, 90, 70], [100, 5, 110, 120]]):
        got = out.boxes[i, best[i]]
        assert (got - torch.tensor(box, dtype=torch.float32)).abs().max() <= 1.0, (i, got)
        assert out.scores[i, best[i]].argmax() == 1
    # source images (BGR, two sizes) through detect(): boxes in each image's pixels
    a = np.full((120, 160, 3), 50, np.uint8)
    a[20:100, 10:60] = 255
    b = np.full((90, 200, 3), 50, np.uint8)
    b[60:85, 150:190] = 255
    dets = teacher.detect([a, b], score_threshold=0.5)
    for det, box in zip(dets, [[10, 20, 60, 100], [150, 60, 190, 85]]):
        assert len(det) == 1 and det.class_ids[0] == 1
        assert np.abs(det.boxes[0] - box).max() <= 1.0, det.boxes


@pytest.mark.parametrize("kind", ["yolo", "pair", "detr"])
def test_wrapped_trained_model_teaches_its_own_outputs(
    kind: str, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    native = NativeTeacher(tiny_checkpoint)
    path = export_wrapped(
        tiny_checkpoint, tmp_path / f"{kind}.onnx", kind, (64, 64), queries=20, batch=2
    )
    teacher = OnnxTeacher(path, native.class_names)
    assert teacher.kind == kind and teacher.batch_fixed == 2  # found from the graph
    assert teacher.teaches(64) == (False, False, False)  # not known to line up
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # 2 + 1 padded
    n, t = native(x), teacher(x)
    if kind == "detr":  # the 20 most confident anchors, as queries
        top = n.scores.amax(-1).topk(20, dim=1)
        torch.testing.assert_close(t.scores.amax(-1).sort(1).values, top.values.sort(1).values)
        idx = t.scores.amax(-1).argmax(1)
        for i in range(3):
            a = top.indices[i, 0]
            torch.testing.assert_close(t.boxes[i, idx[i]], n.boxes[i, a], atol=1e-3, rtol=0)
    else:
        torch.testing.assert_close(t.boxes, n.boxes, atol=1e-3, rtol=0)
        torch.testing.assert_close(t.scores, n.scores, atol=1e-5, rtol=0)
    assert t.cls_logits is None and t.dist is None and t.feats is None


def test_non_square_wrapped_model_detects_like_the_runtime(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    """A (96, 160) YOLO-layout teacher's detections on a source image equal the wrapped
    model's through the runtime's own letterbox, NMS and un-letterbox."""
    from distill.checkpoint import load_detector
    from distill.export import DecodedExport
    from runtime.model_spec import ModelSpec
    from runtime.postprocess import Postprocessor
    from runtime.preprocess import Preprocessor

    path = export_wrapped(tiny_checkpoint, tmp_path / "y.onnx", "yolo", (96, 160))
    model, info = load_detector(tiny_checkpoint)
    teacher = OnnxTeacher(path, tuple(info["class_names"]))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (150, 170, 3), dtype=np.uint8)
    got = teacher.detect([image], score_threshold=0.05, iou_threshold=0.6)[0]
    spec = ModelSpec(class_names=tuple(info["class_names"]), input_size=(96, 160))
    pre = Preprocessor(spec)
    lb = pre(image)
    with torch.no_grad():
        boxes, scores = DecodedExport(model.eval(), (96, 160))(torch.from_numpy(pre.batch(1)))
    post = Postprocessor(spec, 0.05, 0.6)
    want = post({"boxes": boxes.numpy(), "scores": scores.numpy()}, [lb])[0]
    assert len(want) > 0 and len(got) == len(want)
    assert np.abs(got.boxes - want.boxes).max() <= 1.0
    np.testing.assert_array_equal(got.class_ids, want.class_ids)


def test_class_names_are_mapped_by_name(tmp_path: Path, tiny_checkpoint: Path) -> None:
    native = NativeTeacher(tiny_checkpoint)
    names = native.class_names  # disc, ring, square, ...
    # the teacher: another order, a class the data lacks, one named differently
    path = export_wrapped(
        tiny_checkpoint, tmp_path / "t.onnx", "yolo", (64, 64),
        class_names=["dog", "ring", "Disc"], columns=[-1, 1, 0],
    )  # fmt: skip
    layout = OutputLayout(class_map=("Disc=disc",))
    teacher = OnnxTeacher(path, names, layout)
    line = teacher.classes.report()
    assert "\n" not in line
    assert "2 of the data's 8 mapped (Disc->disc, ring)" in line
    assert "1 teacher class(es) ignored" in line and "not taught by this teacher: square" in line
    assert teacher.classes.taught.tolist() == [True, True] + [False] * 6
    x = torch.rand(1, 3, 64, 64)
    n, t = native(x), teacher(x)
    torch.testing.assert_close(t.scores[..., :2], n.scores[..., :2], atol=1e-5, rtol=0)
    assert t.scores[..., 2:].abs().max() == 0
    with pytest.raises(ConfigError, match="none of the data's classes"):
        OnnxTeacher(path, ("car", "bus"))
    with pytest.raises(ConfigError, match=r"class_map names teacher classes \['cat'\]"):
        OnnxTeacher(path, names, OutputLayout(class_map=("cat=disc",)))


def test_onnx_teacher_uses_cuda_only_where_both_sides_have_it() -> None:
    cuda, cpu = torch.device("cuda", 1), torch.device("cpu")
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for(cuda, both)[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert providers_for(cuda, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert providers_for(cpu, both) == ["CPUExecutionProvider"]


def _record(folder: Path) -> dict:
    return json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])


def test_hybrid_with_an_external_teacher_says_what_it_dropped(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from runtime.cli import main

    teacher = export_wrapped(tiny_checkpoint, tmp_path / "y.onnx", "yolo", (96, 160))
    caplog.set_level(logging.INFO)
    args = ["distill", "--teacher", str(teacher), "--data", str(tiny_data), "--out"]
    tiny = ["--img-size", "64", "--batch-size", "4", "--epochs", "1", "--no-progress"]
    tiny += ["--set", "max_steps=1", "--set", "bf16=off", "--set", "kd.teacher_bf16=off"]
    assert main([*args, str(tmp_path / "h"), *tiny]) == 0  # the default method: hybrid
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned
    assert "--method hybrid uses dense; dropped logit, ld, feature (" in warned[0]
    assert "yolo layout, input 96x160" in warned[0]
    assert any("8 of the data's 8 mapped" in r.getMessage() for r in caplog.records)
    assert _record(tmp_path / "h")["loss_kd_dense"] > 0
    caplog.clear()
    assert main([*args, str(tmp_path / "l"), *tiny, "--method", "logit"]) == 0
    assert "loss_kd_logit" not in _record(tmp_path / "l")
    assert _record(tmp_path / "l")["loss_kd_dense"] > 0
    # a term such a teacher cannot give, asked for alone: one line, no traceback
    assert main([*args, str(tmp_path / "x"), *tiny, "--method", "ld"]) == 2


def test_dense_targets_change_what_the_student_learns(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path
) -> None:
    """Same seed, same batches: a student distilled from a YOLO-layout teacher on labelled
    images only (no unlabelled frames) differs from the scratch student only by the dense
    term, and it differs."""
    from distill.checkpoint import read_checkpoint
    from distill.train import train
    from distill.train_config import TrainConfig

    teacher = export_wrapped(tiny_checkpoint, tmp_path / "y.onnx", "yolo", (64, 64))
    over = [*BASE, "max_steps=2", "seed=1"]
    scratch = train(load(TrainConfig, None, over), tiny_data, tmp_path / "s", progress=False)
    cfg = load(DistillConfig, None, [*over, "kd.method=dense", "kd.teacher_bf16=off"])
    dense = distill(cfg, str(teacher), str(tiny_data), str(tmp_path / "d"), progress=False)
    assert _record(tmp_path / "d")["loss_kd_dense"] > 0
    a, b = read_checkpoint(scratch)["model"], read_checkpoint(dense)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_dense_kd_pulls_the_student_to_the_teachers_detections() -> None:
    """The dense loss is nonzero, falls as the student learns the teacher's detection, and
    raises the student's score of the teacher's class where the teacher saw it."""
    from distill.losses.dense_kd import dense_kd, teacher_detections
    from distill.models.head import make_anchors
    from distill.models.presets import nano

    torch.manual_seed(0)
    model = nano(2)
    model.head.reset_bias(64)
    x = torch.rand(1, 3, 64, 64)
    t_boxes = torch.tensor([[[8.0, 8.0, 40.0, 40.0], [9.0, 9.0, 40.0, 40.0], [0.0, 0.0, 5, 5]]])
    t_scores = torch.tensor([[[0.1, 0.8], [0.1, 0.7], [0.05, 0.02]]])
    dets, det_scores = teacher_detections(t_boxes, t_scores, 0.1, 0.6)
    assert dets.tolist() == [[0.0, 1.0, 8.0, 8.0, 40.0, 40.0]]  # NMS and threshold
    taught = torch.tensor([True, True])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()  # BatchNorm on batch statistics throughout, as in training

    def class_scores_inside() -> torch.Tensor:  # (2,) best per class at anchors in the box
        with torch.no_grad():
            out = model(x)
        points, _ = make_anchors(out.shapes, model.strides)
        inside = ((points > 8) & (points < 40)).all(-1)
        return out.cls[0, inside].sigmoid().amax(0)

    before = class_scores_inside()
    losses = []
    for _ in range(15):
        loss, _ = dense_kd(model(x), model.strides, dets, det_scores, taught)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0 and losses[-1] < 0.7 * losses[0], losses
    after = class_scores_inside()
    # the teacher's class overtakes the other where it saw the object (0.8 vs 0.1)
    assert after[1] - after[0] > before[1] - before[0] + 0.1 and after[1] > after[0]
    # a class the teacher does not know gets no gradient from it
    out = model(x)
    out.cls.retain_grad()
    dense_kd(out, model.strides, dets, det_scores, torch.tensor([False, True]))[0].backward()
    assert out.cls.grad[..., 0].abs().max() == 0 and out.cls.grad[..., 1].abs().max() > 0


def test_native_teacher_detects_on_source_images(tiny_checkpoint: Path) -> None:
    teacher = NativeTeacher(tiny_checkpoint)
    image = np.random.default_rng(1).integers(0, 255, (100, 140, 3), dtype=np.uint8)
    (det,) = teacher.detect([image], score_threshold=0.01)
    assert len(det) and det.boxes[:, 2].max() <= 140 and det.boxes[:, 3].max() <= 100
    assert det.class_ids.max() < len(teacher.class_names)


def test_yolo_graph_converts_to_the_decoded_xyxy_layout(tmp_path: Path) -> None:
    """(1, 4 + C, A) cx,cy,w,h + scores -> boxes (1, A, 4) xyxy and scores (1, A, C): the
    converter the latency benchmark's YOLO11n reference goes through."""
    from distill.teachers.yolo import to_decoded_xyxy
    from runtime.backends import open_backend
    from tests.runtime.tiny_models import IR_VERSION, OPSET, make_spec

    a, c = 3, 3
    raw = np.zeros((1, 4 + c, a), np.float32)
    raw[0, :4] = np.array([[10, 20, 4, 6], [30, 30, 10, 10], [50, 5, 2, 8]], np.float32).T
    raw[0, 4:] = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.1, 0.2, 0.7]], np.float32).T
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["const", "z"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "yolo-like",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + c, a])],
        initializer=[
            numpy_helper.from_array(raw, "const"),
            numpy_helper.from_array(np.array(0, np.float32), "zero"),
        ],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    src = tmp_path / "yolo.onnx"
    onnx.save(model, str(src))
    spec = make_spec(output_layout="decoded_xyxy")
    dst = to_decoded_xyxy(src, tmp_path / "yolo-us.onnx", spec)
    b = open_backend(dst)
    assert b.spec == spec
    out = b.infer(np.zeros((1, 3, 64, 64), np.float32))
    np.testing.assert_allclose(out["boxes"][0], [[8, 17, 12, 23], [25, 25, 35, 35], [49, 1, 51, 9]])
    np.testing.assert_allclose(out["scores"][0], raw[0, 4:].T)


def test_plan_terms_keeps_what_a_teacher_can_give() -> None:
    from distill.distillation import KDConfig, plan_terms
    from distill.teachers import Teaches

    native, aligned = Teaches(True, True, True), Teaches(True, False, False)
    other = Teaches(False, False, False)
    assert plan_terms(KDConfig(), native) == (("logit", "ld", "feature"), {})
    terms, dropped = plan_terms(KDConfig(), aligned)  # this family's export, same size
    assert terms == ("logit", "dense") and list(dropped) == ["ld", "feature"]
    terms, dropped = plan_terms(KDConfig(), other)
    assert terms == ("dense",) and list(dropped) == ["logit", "ld", "feature"]
    assert plan_terms(KDConfig(method="logit"), other)[0] == ("dense",)
    assert plan_terms(KDConfig(method="dense"), native) == (("dense",), {})
    assert plan_terms(KDConfig(method="pseudo"), other) == ((), {})
    with pytest.raises(ConfigError, match="--method cwd needs a native teacher"):
        plan_terms(KDConfig(method="cwd"), aligned)
