"""This family's checkpoints exported in other families' output layouts.

A trained Understudy detector wrapped as a single-output YOLO graph (``yolo``), a DETR
graph (``detr``) or a boxes + scores pair without Understudy metadata (``pair``), at any
input (H, W), with its classes renamed, reordered or padded with classes it lacks. The
expected detections of such a teacher are known (they are the wrapped model's), which is
how the tests and the accuracy benchmark check the any-teacher path without downloading
another family's model.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from distill.checkpoint import load_detector
from distill.export import DecodedExport
from runtime.errors import ConfigError

WRAP_KINDS = ("yolo", "detr", "pair")
OUTPUTS = {
    "yolo": ["output0"],
    "detr": ["logits", "pred_boxes"],
    "pair": ["det_boxes", "det_scores"],
}
INPUTS = {"yolo": "images", "detr": "pixel_values", "pair": "input"}


class _Wrapped(nn.Module):
    """(B, 3, H, W) in [0, 1] -> the ``kind`` layout's outputs (see the module docstring)."""

    def __init__(
        self, model: nn.Module, kind: str, hw: tuple[int, int], columns: Sequence[int], queries: int
    ) -> None:
        super().__init__()
        self.decoded = DecodedExport(model, hw)
        anchors = sum((hw[0] // s) * (hw[1] // s) for s in model.strides)
        self.kind, self.queries = kind, min(queries, anchors)
        self.register_buffer("cols", torch.tensor([max(c, 0) for c in columns]))
        self.register_buffer("present", torch.tensor([float(c >= 0) for c in columns]))
        self.register_buffer("wh", torch.tensor([hw[1], hw[0]] * 2, dtype=torch.float32))

    def forward(self, x: torch.Tensor):
        boxes, scores = self.decoded(x)  # (B, A, 4) xyxy pixels, (B, A, C) probabilities
        scores = scores.index_select(2, self.cols) * self.present
        xy1, xy2 = boxes[..., :2], boxes[..., 2:]
        cxcywh = torch.cat([(xy1 + xy2) / 2, xy2 - xy1], -1)
        if self.kind == "yolo":
            return torch.cat([cxcywh, scores], -1).transpose(1, 2)
        if self.kind == "pair":
            return boxes, scores
        idx = scores.amax(-1).topk(self.queries, dim=1).indices  # the Q most confident anchors
        q_boxes = cxcywh.gather(1, idx[..., None].expand(-1, -1, 4)) / self.wh
        q_scores = scores.gather(1, idx[..., None].expand(-1, -1, scores.shape[-1]))
        return torch.logit(q_scores.clamp(1e-6, 1 - 1e-6)), q_boxes


def export_wrapped(
    checkpoint: str | Path,
    dst: str | Path,
    kind: str,
    input_hw: tuple[int, int],
    class_names: Sequence[str] | None = None,
    columns: Sequence[int] | None = None,
    queries: int = 100,
    names_metadata: bool = True,
    batch: int = 1,
) -> Path:
    """Write ``checkpoint`` as an ONNX detector of layout ``kind`` with input
    (``batch``, 3, H, W) (a fixed batch, as most exports have).

    class_names: the teacher's output classes (default: the checkpoint's); columns: for
    each output class, the checkpoint class it reads (-1: a class it lacks, always 0);
    queries: DETR's query count (the most confident anchors); names_metadata: store the
    names Ultralytics-style (``names``) so the teacher describes its own classes.
    """
    import onnx

    from runtime.files import atomic_path

    if kind not in WRAP_KINDS:
        raise ConfigError(f"wrap kind {kind!r}: use one of {', '.join(WRAP_KINDS)}")
    model, info = load_detector(checkpoint)
    names = list(class_names or info["class_names"])
    columns = list(columns if columns is not None else range(len(names)))
    if len(columns) != len(names):
        raise ConfigError(f"{len(columns)} columns for {len(names)} class names")
    module = _Wrapped(model.eval(), kind, tuple(input_hw), columns, queries).eval()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(batch, 3, *input_hw),),
            buf,
            dynamo=False,
            opset_version=17,
            input_names=[INPUTS[kind]],
            output_names=OUTPUTS[kind],
        )
    graph = onnx.load_from_string(buf.getvalue())
    if names_metadata:
        entry = graph.metadata_props.add()
        entry.key, entry.value = "names", repr(dict(enumerate(names)))
    with atomic_path(Path(dst)) as tmp:
        onnx.save(graph, str(tmp))
    return Path(dst)
