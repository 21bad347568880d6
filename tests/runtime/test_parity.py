"""Cross-backend parity on an exported student: torch (reference), ONNX Runtime, TensorRT.

Same detections means: the same number per image, and each reference detection has a
detection of the same class with IoU >= 0.99 and a score within 1e-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill import export
from runtime.pipeline import Detector
from runtime.postprocess import box_iou
from runtime.types import Detections
from tests.runtime.tiny_models import scene

IMG = 128
FRAMES = [scene(480, 640, seed=1), scene(300, 200, seed=9)]


def assert_same_detections(
    ref: Detections, other: Detections, iou: float = 0.99, score_tol: float = 1e-3
):
    assert len(ref) == len(other), (len(ref), len(other))
    if not len(ref):
        return
    m = box_iou(ref.boxes, other.boxes)
    same_class = ref.class_ids[:, None] == other.class_ids[None, :]
    close_score = np.abs(ref.scores[:, None] - other.scores[None, :]) <= score_tol
    assert np.all(np.any((m >= iou) & same_class & close_score, axis=1))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from distill.checkpoint import make_checkpoint, save_atomic
    from distill.models.presets import PRESETS, build_detector

    torch.manual_seed(0)
    names = ("person", "car", "dog")
    model = build_detector(PRESETS["nano"], len(names)).eval()
    with torch.no_grad():  # an untrained head scores every anchor alike: spread them out
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = make_checkpoint(
        model, preset="nano", scale=PRESETS["nano"], class_names=names, img_size=IMG
    )
    return save_atomic(ckpt, tmp_path_factory.mktemp("student") / "student.pt")


@pytest.fixture(scope="module", params=["decoded_xyxy", "raw_dfl"])
def student(request: pytest.FixtureRequest, checkpoint: Path) -> tuple[Path, Path]:
    """(checkpoint, ONNX export in the given layout; raw_dfl with a dynamic batch)."""
    layout = request.param
    onnx_path = checkpoint.with_name(f"student-{layout}.onnx")
    export.export_onnx(
        checkpoint, onnx_path, img_size=IMG, layout=layout,
        dynamic_batch=layout == "raw_dfl", validate=False,
    )  # fmt: skip
    return checkpoint, onnx_path


def threshold_for(det: Detector) -> float:
    """A score threshold that keeps about 1% of the anchors of this (untrained) model."""
    best = []
    for frame in FRAMES:
        det._pre(frame)
        best.append(det.backend.infer(det._pre.batch(1))["scores"].max(axis=2).ravel())
    return float(np.quantile(np.concatenate(best), 0.99))


def test_torch_and_onnxruntime_agree(student):
    pt, onnx_path = student
    with Detector(pt) as ref_probe:
        thr = threshold_for(ref_probe)
    with Detector(pt, score_threshold=thr) as ref, Detector(onnx_path, score_threshold=thr) as ort:
        assert (
            ref.spec.class_names == ort.spec.class_names
            and ref.spec.input_size == ort.spec.input_size
        )
        total = 0
        for frame in FRAMES:
            a, _ = ref.detect(frame)
            b, _ = ort.detect(frame)
            assert_same_detections(a, b)
            total += len(a)
        assert total > 0
        if ort.max_batch > 1:  # the dynamic-batch export: one batched call, same answers
            for frame, (d, _) in zip(FRAMES, ort.detect_batch(FRAMES)):
                assert_same_detections(ref.detect(frame)[0], d)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_agrees_with_onnxruntime(student, tmp_path: Path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    _, onnx_path = student
    with Detector(onnx_path) as probe:
        thr = threshold_for(probe)
    with (
        Detector(onnx_path, score_threshold=thr) as ort,
        Detector(onnx_path, backend="tensorrt", score_threshold=thr) as trt,
    ):
        assert trt.backend_name == "tensorrt"
        for frame in FRAMES:
            assert_same_detections(ort.detect(frame)[0], trt.detect(frame)[0], score_tol=2e-3)
