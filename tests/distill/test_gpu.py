"""CUDA checks: training, every distillation method and the torch backend on a GPU.

Marked ``gpu``: skipped (with a reason) on machines without CUDA, which is every CI
machine. Run on a GPU machine with ``python -m pytest -m gpu tests``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.checkpoint import read_checkpoint
from distill.config import load
from distill.distillation import METHODS, DistillConfig, distill
from distill.export import export_onnx
from distill.train import train
from distill.train_config import TrainConfig
from runtime.pipeline import Detector
from tests.runtime.test_parity import assert_same_detections
from tests.runtime.tiny_models import scene

pytestmark = pytest.mark.gpu

BASE = ["model=nano", "img_size=64", "batch_size=4", "epochs=1", "max_steps=2", "bf16=on"]


def test_training_runs_on_the_gpu(tmp_path: Path, tiny_data: Path) -> None:
    cfg = load(TrainConfig, None, BASE)
    out = train(cfg, tiny_data, tmp_path, progress=False)
    ckpt = read_checkpoint(out)  # readable on a CPU-only machine: tensors are mapped to CPU
    assert all(v.device.type == "cpu" for v in ckpt["model"].values())
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2 and np.isfinite(record["loss_box"])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_distils_on_the_gpu(
    method: str, tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path
) -> None:
    cfg = load(DistillConfig, None, [*BASE, "kd.teacher_bf16=on", f"kd.method={method}"])
    out = distill(
        cfg,
        str(tiny_checkpoint),
        str(tiny_data),
        str(tmp_path),
        unlabelled=str(tiny_data / "unlabelled"),
        progress=False,
    )
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(np.isfinite(v) for k, v in record.items() if k.startswith("loss_"))
    assert set(read_checkpoint(out)["model"]) == set(read_checkpoint(tiny_checkpoint)["model"])


def test_torch_cuda_backend_matches_onnxruntime_on_cpu(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    onnx_path = export_onnx(tiny_checkpoint, tmp_path / "m.onnx").path
    frames = [scene(480, 640, seed=1), scene(300, 200, seed=9)]
    ref = Detector(onnx_path, backend="onnxruntime", score_threshold=0.05)
    gpu = Detector(tiny_checkpoint, backend="torch", device="cuda", score_threshold=0.05)
    for frame in frames:
        (want, _), (got, _) = ref.detect(frame), gpu.detect(frame)  # (detections, timings)
        assert_same_detections(want, got, iou=0.99, score_tol=2e-3)
    assert torch.cuda.is_available()
