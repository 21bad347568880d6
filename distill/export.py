"""Checkpoint -> ONNX: the hand-off from offline to online.

``export_onnx`` writes an opset-17 ONNX file with input ``images`` (B, 3, H, W) float32
RGB in [0, 1] at a static H x W (optionally a dynamic batch axis) and the outputs of one
layout of :mod:`runtime.model_spec` (``decoded_xyxy``: ``boxes`` (B, A, 4) xyxy network
pixels + ``scores`` (B, A, C); ``raw_dfl``: ``box_dist`` (B, A, 4R) + ``cls_logits``
(B, A, C)). BatchNorm is folded into the convolutions (eval mode + constant folding of
the legacy TorchScript exporter; verified), the anchor grid is a constant, and the graph
has only TensorRT-friendly ops and no float64 tensor (checked with
:mod:`runtime.engine.preflight`).
The :class:`~runtime.model_spec.ModelSpec` goes into ``metadata_props`` and the
``<file>.json`` sidecar. Validation: ``onnx.checker``, then parity against torch on
images: raw outputs (max abs diff) and detections after NMS (:func:`compare_detections`).
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from distill.checkpoint import load_detector, spec_for
from distill.models.detector import DecodedDetector, Detector, RawDetector
from distill.models.head import distances_to_boxes, make_anchors
from runtime.engine.onnx_io import save_onnx_atomic, set_metadata
from runtime.engine.preflight import check_model
from runtime.errors import ConfigError, UnderstudyError
from runtime.files import ensure_writable
from runtime.model_spec import INPUT_NAME, LAYOUTS, OUTPUT_NAMES, ModelSpec
from runtime.postprocess import box_iou
from runtime.types import Detections

DEFAULT_OPSET = 17


class DecodedExport(nn.Module):
    """``decoded_xyxy`` deploy graph with a constant anchor grid: (B, 3, H, W) ->
    boxes (B, A, 4) xyxy network pixels, scores (B, A, C). Same math as
    :meth:`Detector.decode`, without the shape-dependent ``arange``/``meshgrid`` ops."""

    def __init__(self, model: Detector, size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        shapes = tuple((size[0] // s, size[1] // s) for s in model.strides)
        points, strides = make_anchors(shapes, model.strides)
        self.register_buffer("points", points)  # (A, 2)
        self.register_buffer("strides", strides)  # (A, 1)
        self.register_buffer("bins", torch.arange(model.reg_max, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        ltrb = (out.dist.softmax(-1) * self.bins).sum(-1)  # (B, A, 4) stride units
        return distances_to_boxes(ltrb, self.points, self.strides), out.cls.sigmoid()


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote and how it validated."""

    path: Path
    sidecar: Path
    spec: ModelSpec
    opset: int
    dynamic_batch: bool
    op_counts: dict[str, int]
    parity: ParityReport | None

    def summary(self) -> str:
        h, w = self.spec.input_size
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.op_counts.items()))
        lines = [
            f"wrote {self.path} (+ {self.sidecar.name}): opset {self.opset}, input {INPUT_NAME} "
            f"({'B' if self.dynamic_batch else 1}, 3, {h}, {w}), layout {self.spec.output_layout}, "
            f"{self.spec.num_classes} classes, model hash {self.spec.model_hash}",
            f"ops: {ops}",
        ]
        if self.parity is not None:
            lines.append(self.parity.summary())
        return "\n".join(lines)


def _set_output_shapes(model: onnx.ModelProto, dims: dict[str, tuple[int | str, ...]]) -> None:
    """Declare the outputs' shapes (the tracer leaves some as symbolic names)."""
    for out in model.graph.output:
        shape = out.type.tensor_type.shape
        shape.ClearField("dim")
        for d in dims[out.name]:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = d


def _trace(
    module: nn.Module, size: int, dynamic_batch: bool, layout: str, opset: int
) -> onnx.ModelProto:
    names = list(OUTPUT_NAMES[layout])
    axes = {n: {0: "batch"} for n in [INPUT_NAME, *names]} if dynamic_batch else None
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            module,
            (torch.zeros(1, 3, size, size),),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buf.getvalue())


def export_onnx(
    ckpt_path: str | Path,
    out_path: str | Path,
    img_size: int | None = None,
    dynamic_batch: bool = False,
    layout: str = "decoded_xyxy",
    opset: int = DEFAULT_OPSET,
    validate: bool = True,
    parity_image_paths: list[str | Path] | None = None,
) -> ExportReport:
    """Export a detector checkpoint to ONNX (+ sidecar) and validate it.

    Args:
        img_size: square input size, a multiple of 32 (default: the checkpoint's).
        dynamic_batch: symbolic batch axis ``batch`` on the input and outputs.
        layout: ``decoded_xyxy`` or ``raw_dfl`` (see :mod:`runtime.model_spec`).
        validate: run ``onnx.checker`` and the torch-vs-ONNX Runtime parity check. Raw
            outputs beyond :data:`OUTPUT_TOLERANCE` raise UnderstudyError (the file is left
            for inspection); detections that differ only at NMS/threshold near-ties while
            the outputs agree are reported in ``report.parity``, not raised.
        parity_image_paths: images for the parity check (default: up to 8 images of the
            checkpoint's validation split if it is on disk, else drawn test images).

    Raises ModelFileError for a missing/wrong/truncated checkpoint, UnderstudyError for an
    unwritable output path, ConfigError for a bad size/layout.
    """
    ckpt_path, out_path = Path(ckpt_path), Path(out_path)
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    model, info = load_detector(ckpt_path)
    size = int(img_size or info.get("img_size", 320))
    if size <= 0 or size % 32:
        raise ConfigError(
            f"--size must be a positive multiple of 32 (the largest stride), got {size}"
        )
    ensure_writable(out_path)
    base = spec_for(model, info, size, str(ckpt_path))
    extra = {"opset": opset, "dynamic_batch": dynamic_batch, "torch_version": torch.__version__}
    spec = dataclasses.replace(base, output_layout=layout, precision="fp32", extra=extra)

    module = DecodedExport(model, (size, size)) if layout == "decoded_xyxy" else RawDetector(model)
    graph = _trace(module.eval(), size, dynamic_batch, layout, opset)
    batch: int | str = "batch" if dynamic_batch else 1
    a, c = spec.num_anchors, spec.num_classes
    box_w = 4 if layout == "decoded_xyxy" else 4 * spec.reg_max
    names = OUTPUT_NAMES[layout]
    _set_output_shapes(graph, {names[0]: (batch, a, box_w), names[1]: (batch, a, c)})
    set_metadata(graph, spec)
    _verify_graph(graph, str(out_path))
    save_onnx_atomic(graph, out_path)
    sidecar = spec.write_sidecar(out_path)

    parity = None
    if validate:
        onnx.checker.check_model(str(out_path))
        reference = DecodedDetector(model) if layout == "decoded_xyxy" else RawDetector(model)
        images = parity_images(info, parity_image_paths)
        parity = check_parity(out_path, reference.eval(), spec, images)
        if not parity.outputs_match:  # a defect of the export, not an NMS near-tie
            raise UnderstudyError(
                f"{out_path}: ONNX output does not match torch: {parity.summary()}"
            )
    counts: dict[str, int] = {}
    for node in graph.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return ExportReport(out_path, sidecar, spec, opset, dynamic_batch, counts, parity)


def _verify_graph(graph: onnx.ModelProto, source: str) -> None:
    """The exported graph must be BN-free and pass the TensorRT pre-flight check."""
    bn = [n.name for n in graph.graph.node if n.op_type == "BatchNormalization"]
    if bn:  # the exporter folds BN in eval mode; anything left is an exporter regression
        raise RuntimeError(f"{source}: BatchNormalization not folded by the exporter: {bn[:3]}")
    report = check_model(graph, source=source)
    if not report.ok:
        raise RuntimeError(
            f"{source}: the exported graph fails the TensorRT pre-flight check: "
            + "; ".join(str(p) for p in report.problems[:5])
        )


def torch_outputs(module: nn.Module, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Run a deploy wrapper on a (B, 3, H, W) float32 batch; outputs by layout name."""
    with torch.no_grad():
        a, b = module(torch.from_numpy(np.ascontiguousarray(batch)))
    names = OUTPUT_NAMES["raw_dfl" if isinstance(module, RawDetector) else "decoded_xyxy"]
    return {names[0]: a.numpy(), names[1]: b.numpy()}


# -- parity: torch vs ONNX Runtime on images ----------------------------------------------
PARITY_IOU = 0.99  # matched detections must overlap at least this much
PARITY_SCORE_DIFF = 1e-3  # and differ in score by at most this much
# largest raw-output difference (all anchors) accepted: network pixels, probabilities, logits
OUTPUT_TOLERANCE = {"boxes": 0.5, "scores": 1e-3, "box_dist": 1e-2, "cls_logits": 1e-2}


@dataclass
class DetectionMatch:
    """Greedy same-class matching of detections ``b`` against reference ``a``."""

    reference: int  # detections in a (all images)
    other: int  # detections in b
    matched: int  # pairs with IoU >= the threshold
    min_iou: float  # over matched pairs (1.0 when none)
    max_score_diff: float  # over matched pairs (0.0 when none)
    ious: list[float] = dataclasses.field(default_factory=list)


def compare_detections(a: list[Detections], b: list[Detections], iou_min: float) -> DetectionMatch:
    """Match per image, best reference score first, to the same-class unmatched detection
    of ``b`` with the highest IoU; a pair counts when IoU >= ``iou_min``."""
    matched, ious, diffs = 0, [], []
    for da, db in zip(a, b):
        free = np.ones(len(db), bool)
        for i in np.argsort(-da.scores, kind="stable"):
            cand = np.flatnonzero(free & (db.class_ids == da.class_ids[i]))
            if cand.size == 0:
                continue
            overlap = box_iou(da.boxes[i], db.boxes[cand])[0]
            j = int(np.argmax(overlap))
            if overlap[j] >= iou_min:
                free[cand[j]] = False
                matched += 1
                ious.append(float(overlap[j]))
                diffs.append(abs(float(da.scores[i]) - float(db.scores[cand[j]])))
    return DetectionMatch(
        sum(map(len, a)),
        sum(map(len, b)),
        matched,
        min(ious, default=1.0),
        max(diffs, default=0.0),
        ious,
    )


@dataclass
class ParityReport:
    """Torch reference vs the exported ONNX model in ONNX Runtime."""

    images: int
    max_abs_diff: dict[str, float]  # per output name, over all anchors
    detections: DetectionMatch

    @property
    def outputs_match(self) -> bool:
        """Raw outputs within :data:`OUTPUT_TOLERANCE` everywhere."""
        return all(v <= OUTPUT_TOLERANCE[k] for k, v in self.max_abs_diff.items())

    @property
    def identical(self) -> bool:
        """Same detections after NMS: every one matched, IoU >= 0.99, score diff <= 1e-3."""
        d = self.detections
        return (
            d.reference == d.other == d.matched
            and d.min_iou >= PARITY_IOU
            and d.max_score_diff <= PARITY_SCORE_DIFF
        )

    @property
    def passed(self) -> bool:
        return self.outputs_match and self.identical

    def summary(self) -> str:
        diffs = ", ".join(f"{k} {v:.3g}" for k, v in self.max_abs_diff.items())
        d = self.detections
        verdict = "PASSED" if self.passed else "FAILED"
        if self.outputs_match and not self.identical:  # tiny differences flipped a decision
            verdict = (
                "outputs agree; the detections differ only where NMS or the score "
                "threshold meets a near-tie"
            )
        return (
            f"parity on {self.images} images: max abs diff {diffs}; detections after NMS "
            f"torch {d.reference} / onnx {d.other}, matched {d.matched} (min IoU {d.min_iou:.4f}, "
            f"max score diff {d.max_score_diff:.2g}): {verdict}"
        )


def synthetic_images(n: int, seed: int = 0, size: tuple[int, int] = (240, 320)) -> list[np.ndarray]:
    """``n`` drawn test images (H, W, 3) BGR uint8: a gradient with filled rectangles,
    circles and triangles of random colours (deterministic for a seed)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    out = []
    for _ in range(n):
        ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        lo, hi = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        img = np.broadcast_to(lo + (hi - lo) * ramp, (h, w, 3)).astype(np.uint8).copy()
        for _ in range(int(rng.integers(3, 9))):
            color = tuple(int(v) for v in rng.integers(0, 256, 3))
            cx, cy, r = (
                int(rng.integers(0, w)),
                int(rng.integers(0, h)),
                int(rng.integers(6, h // 3)),
            )
            match int(rng.integers(3)):
                case 0:
                    cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), color, -1)
                case 1:
                    cv2.circle(img, (cx, cy), r, color, -1)
                case _:
                    pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
                    cv2.fillPoly(img, [pts], color)
        out.append(img)
    return out


def read_images(paths: list[str | Path]) -> list[np.ndarray]:
    """Read image files as (H, W, 3) BGR uint8; DataError names an unreadable file."""
    import cv2

    from runtime.errors import DataError

    images = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"{p}: not a readable image")
        images.append(img)
    return images


def parity_images(
    info: dict, paths: list[str | Path] | None = None, n: int = 8
) -> list[np.ndarray]:
    """Images for the parity check: ``paths``; else the first ``n`` images of the
    checkpoint's validation split when its dataset is on disk; else drawn images."""
    if paths:
        return read_images(list(paths)[:n])
    data = info.get("data")
    if data and Path(str(data)).exists():
        try:
            from runtime.data.dataset import load_split

            records = load_split(str(data), "val").records[:n]
            if records:
                return read_images([r.path for r in records])
        except UnderstudyError:
            pass
    return synthetic_images(n)


def check_parity(
    onnx_path: Path, reference: nn.Module, spec: ModelSpec, images: list[np.ndarray]
) -> ParityReport:
    """Preprocess each image as the runtime does, run torch and ONNX Runtime, compare
    raw outputs and the detections after the runtime's NMS."""
    from runtime.backends.onnxruntime import OnnxRuntimeBackend
    from runtime.postprocess import Postprocessor
    from runtime.preprocess import Preprocessor

    backend = OnnxRuntimeBackend(onnx_path)
    pre, post = Preprocessor(spec, slots=1), Postprocessor(spec)
    diffs = dict.fromkeys(spec.output_names, 0.0)
    dets_torch, dets_onnx = [], []
    for image in images:
        lb = pre(image, 0, "BGR")
        batch = pre.batch(1)
        ref, got = torch_outputs(reference, batch), backend.infer(batch)
        for k in diffs:
            diffs[k] = max(diffs[k], float(np.abs(ref[k] - got[k]).max()))
        dets_torch += post(ref, [lb])
        dets_onnx += post(got, [lb])
    backend.close()
    return ParityReport(len(images), diffs, compare_detections(dets_torch, dets_onnx, PARITY_IOU))
