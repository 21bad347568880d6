"""The single-output YOLO layout (Ultralytics' detection export): one output (B, 4 + C, N),
per candidate cx, cy, w, h in input pixels then C class probabilities (already sigmoid).

:func:`decode` reads it for a teacher; :func:`to_decoded_xyxy` rewrites such a graph into
this family's ``decoded_xyxy`` layout so that the runtime serves it like a student (the
latency benchmark's YOLO11n reference). This module needs numpy and onnx only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.teachers.layout import OutputLayout, activate, to_xyxy_pixels
from runtime.errors import ModelFileError
from runtime.model_spec import ModelSpec


def decode(
    outputs: dict[str, np.ndarray], layout: OutputLayout, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(B, 4 + C, N) -> boxes (B, N, 4) xyxy input pixels, scores (B, N, C) probabilities."""
    raw = outputs[layout.boxes]
    c = len(layout.class_names) + int(layout.background_last)
    if raw.ndim != 3 or raw.shape[1] != 4 + c:
        raise ValueError(
            f"teacher output {layout.boxes}{list(raw.shape)} is not (B, 4 + C, N) with C = {c} "
            "classes; if it is (B, N, 4 + C) or has other classes, describe it in a layout file"
        )
    t = raw.transpose(0, 2, 1)
    return to_xyxy_pixels(t[..., :4], layout, hw), activate(t[..., 4:], layout)


def to_decoded_xyxy(src: Path, dst: Path, spec: ModelSpec) -> Path:
    """Rewrite a single-output YOLO detection ONNX (one output (B, 4 + C, A): cx, cy, w, h
    in network pixels, then C sigmoid scores) into the ``decoded_xyxy`` layout, with
    ``spec`` as metadata. Pre-/post-processing then run exactly as for the student."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from runtime.files import atomic_path

    model = onnx.load(str(src))
    graph = model.graph
    if len(graph.output) != 1 or len(graph.input) != 1:
        raise ModelFileError(f"{src}: expected one input and one (B, 4 + C, A) output")
    out = graph.output[0].name
    c = spec.num_classes
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([4, c], np.int64), "us_split_box_cls"),
            numpy_helper.from_array(np.array([2, 2], np.int64), "us_split_xy_wh"),
            numpy_helper.from_array(np.array(0.5, np.float32), "us_half"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Transpose", [out], ["us_t"], perm=[0, 2, 1]),
            helper.make_node("Split", ["us_t", "us_split_box_cls"], ["us_xywh", "scores"], axis=2),
            helper.make_node("Split", ["us_xywh", "us_split_xy_wh"], ["us_xy", "us_wh"], axis=2),
            helper.make_node("Mul", ["us_wh", "us_half"], ["us_half_wh"]),
            helper.make_node("Sub", ["us_xy", "us_half_wh"], ["us_xy1"]),
            helper.make_node("Add", ["us_xy", "us_half_wh"], ["us_xy2"]),
            helper.make_node("Concat", ["us_xy1", "us_xy2"], ["boxes"], axis=2),
        ]
    )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", "anchors", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "anchors", c]),
        ]
    )
    helper.set_model_props(model, spec.to_metadata_props())
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return dst
