"""Tiny Understudy ONNX models built with onnx.helper, and test frames.

``build_conv_model`` is a real (tiny) detector head: per stride an average pool and a
1x1 conv produce DFL bin logits and class logits, so detections depend on the image.
With ``layout="decoded_xyxy"`` the DFL decode and sigmoid are in the graph; with
``raw_dfl`` they are left to the runtime, so the two layouts must give the same answers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.model_spec import ModelSpec

OPSET = 17
IR_VERSION = 9


def make_spec(**overrides: object) -> ModelSpec:
    kw: dict = dict(
        class_names=("person", "car", "dog"),
        input_size=(64, 64),
        strides=(8, 16, 32),
        reg_max=4,
        output_layout="raw_dfl",
    )
    kw.update(overrides)
    return ModelSpec(**kw)


def _save(model: onnx.ModelProto, path: Path, spec: ModelSpec | None) -> Path:
    if spec is not None:
        onnx.helper.set_model_props(model, spec.to_metadata_props())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def build_conv_model(
    path: Path,
    spec: ModelSpec,
    *,
    seed: int = 0,
    batch: int | str = "batch",
    with_metadata: bool = True,
) -> Path:
    """A tiny detector in ``spec.output_layout`` (weights fixed by ``seed``)."""
    rng = np.random.default_rng(seed)
    h, w = spec.input_size
    r, c = spec.reg_max, spec.num_classes
    k = 4 * r + c
    inits, nodes, levels = [], [], []
    for s in spec.strides:
        wt = rng.normal(0, 2.0, (k, 3, 1, 1)).astype(np.float32)
        bias = np.concatenate([rng.normal(0, 1, 4 * r), rng.normal(-1.5, 1, c)]).astype(np.float32)
        inits += [numpy_helper.from_array(wt, f"w{s}"), numpy_helper.from_array(bias, f"b{s}")]
        nodes += [
            helper.make_node(
                "AveragePool", ["images"], [f"p{s}"], kernel_shape=[s, s], strides=[s, s]
            ),
            helper.make_node("Conv", [f"p{s}", f"w{s}", f"b{s}"], [f"c{s}"]),
            helper.make_node("Reshape", [f"c{s}", "shape_bk"], [f"r{s}"]),
            helper.make_node("Transpose", [f"r{s}"], [f"t{s}"], perm=[0, 2, 1]),
        ]
        levels.append(f"t{s}")
    inits += [
        numpy_helper.from_array(np.array([0, k, -1], np.int64), "shape_bk"),
        numpy_helper.from_array(np.array([4 * r, c], np.int64), "split_k"),
    ]
    nodes += [
        helper.make_node("Concat", levels, ["all"], axis=1),
        helper.make_node("Split", ["all", "split_k"], ["box_dist", "cls_logits"], axis=2),
    ]
    a = spec.num_anchors
    if spec.output_layout == "raw_dfl":
        outputs = [
            helper.make_tensor_value_info("box_dist", TensorProto.FLOAT, [batch, a, 4 * r]),
            helper.make_tensor_value_info("cls_logits", TensorProto.FLOAT, [batch, a, c]),
        ]
    else:
        from runtime.postprocess import make_anchors

        points, strides = make_anchors(spec.input_size, spec.strides)
        inits += [
            numpy_helper.from_array(np.array([0, -1, 4, r], np.int64), "shape_bins"),
            numpy_helper.from_array(np.array([0, -1, 4], np.int64), "shape_4"),
            numpy_helper.from_array(np.arange(r, dtype=np.float32).reshape(r, 1), "bins"),
            numpy_helper.from_array(strides.reshape(1, a, 1), "stride"),
            numpy_helper.from_array(points.reshape(1, a, 2), "points"),
            numpy_helper.from_array(np.array([2, 2], np.int64), "split_2"),
        ]
        nodes += [
            helper.make_node("Reshape", ["box_dist", "shape_bins"], ["bd4"]),
            helper.make_node("Softmax", ["bd4"], ["prob"], axis=-1),
            helper.make_node("MatMul", ["prob", "bins"], ["dist1"]),
            helper.make_node("Reshape", ["dist1", "shape_4"], ["dist"]),
            helper.make_node("Mul", ["dist", "stride"], ["dist_px"]),
            helper.make_node("Split", ["dist_px", "split_2"], ["lt", "rb"], axis=2),
            helper.make_node("Sub", ["points", "lt"], ["xy1"]),
            helper.make_node("Add", ["points", "rb"], ["xy2"]),
            helper.make_node("Concat", ["xy1", "xy2"], ["boxes"], axis=2),
            helper.make_node("Sigmoid", ["cls_logits"], ["scores"]),
        ]
        outputs = [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, a, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, a, c]),
        ]
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, h, w])]
    return _save(_model(nodes, inputs, outputs, inits), path, spec if with_metadata else None)


def build_fixed_model(
    path: Path,
    spec: ModelSpec,
    boxes: np.ndarray,
    scores: np.ndarray,
    ballast_mb: float = 0.0,
) -> Path:
    """A ``decoded_xyxy`` model whose outputs are ``boxes`` (A, 4) and ``scores`` (A, C)
    for every image (broadcast over a dynamic batch). With ``ballast_mb`` it also holds a
    weight of that many MiB (float32): every run gathers one element of it at an index
    computed from the image, so no graph optimization can fold it away and the backend
    keeps all of it resident (a model of a known size)."""
    a, c = scores.shape
    h, w = spec.input_size
    inits = [
        numpy_helper.from_array(boxes.reshape(1, a, 4).astype(np.float32), "const_boxes"),
        numpy_helper.from_array(scores.reshape(1, a, c).astype(np.float32), "const_scores"),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape_b11"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["m", "zero"], ["m0"]),
    ]
    zeros = "m0"  # batch-shaped zeros added to the constants make the batch dynamic
    if ballast_mb > 0:
        ballast = np.full(int(ballast_mb * 2**20) // 4, 0.5, np.float32)
        inits.append(numpy_helper.from_array(ballast, "ballast"))
        zeros = "ballast0"  # 0 * ballast[int(m0)]: zero, computed from the image and ballast
        nodes += [
            helper.make_node("Cast", ["m0"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["ballast", "index"], ["picked"], axis=0),
            helper.make_node("Mul", ["picked", "zero"], [zeros]),
        ]
    nodes += [
        helper.make_node("Reshape", [zeros, "shape_b11"], ["z"]),
        helper.make_node("Add", ["const_boxes", "z"], ["boxes"]),
        helper.make_node("Add", ["const_scores", "z"], ["scores"]),
    ]
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, h, w])]
    outputs = [
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", a, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", a, c]),
    ]
    return _save(_model(nodes, inputs, outputs, inits), path, spec)


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A (h, w, 3) BGR uint8 frame: noise plus a few bright rectangles."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = (
            min(w, x0 + int(rng.integers(4, w // 2 + 5))),
            min(h, y0 + int(rng.integers(4, h // 2 + 5))),
        )
        img[y0:y1, x0:x1] = rng.integers(100, 256, 3, dtype=np.uint8)
    return img
