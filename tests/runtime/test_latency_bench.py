"""benchmarks.latency: rows in the results format of benchmarks/README.md, merging, the YOLO
layout adapter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks import latency
from runtime.backends import open_backend
from tests.runtime.tiny_models import IR_VERSION, OPSET, make_spec

REQUIRED = ("model", "backend", "precision", "batch", "input", "p50_ms", "p90_ms", "p99_ms",
            "throughput_fps", "preprocess_ms", "infer_ms", "postprocess_ms")  # fmt: skip


def test_benchmark_writes_and_merges_rows(
    raw_model: Path, decoded_model: Path, tmp_path: Path, capsys
):
    out = tmp_path / "results" / "latency.json"
    args = ["--warmup", "1", "--runs", "4", "--input-size-src", "96x64", "--out", str(out)]
    assert latency.main([str(raw_model), "--batch", "1", "2", *args]) == 0
    doc = json.loads(out.read_text())
    assert set(doc) >= {"command", "machine", "date", "rows"}
    assert doc["command"].startswith("python -m benchmarks.latency ")
    rows = doc["rows"]
    assert [(r["model"], r["batch"]) for r in rows] == [("raw", 1), ("raw", 2)]
    for r in rows:
        assert all(k in r for k in REQUIRED)
        assert (r["backend"], r["precision"], r["input"], r["source_input"]) == (
            "onnxruntime",
            "fp32",
            "64x64",
            "96x64",
        )
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput_fps"] > 0
        assert r["infer_only_fps"] > 0 and r["pre_post_pct_of_infer"] > 0
    assert (
        rows[0]["pipelined_fps"] > 0
        and rows[0]["sequential_fps"] > 0
        and "pipelined_fps" not in rows[1]
    )

    # A second invocation replaces the same key and keeps the others.
    assert latency.main([str(raw_model), str(decoded_model), "--names", "raw", "dec", *args]) == 0
    rows2 = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["batch"]) for r in rows2] == [("dec", 1), ("raw", 1), ("raw", 2)]
    md = out.with_suffix(".md").read_text()
    assert "| model | backend |" in md and md.count("| onnxruntime |") == 3
    # Backends that cannot run the file are skipped with a message.
    assert latency.main([str(raw_model), "--backends", "torch", *args]) == 1
    assert "skip raw on torch" in capsys.readouterr().out


def test_yolo_reference_flag_without_ultralytics(
    raw_model: Path, tmp_path: Path, capsys, monkeypatch
):
    monkeypatch.setattr(latency, "build_yolo11n_reference", lambda path, size: None)
    out = tmp_path / "l.json"
    assert (
        latency.main(
            [
                str(raw_model),
                "--yolo11n-reference",
                "--warmup",
                "0",
                "--runs",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert [r["model"] for r in json.loads(out.read_text())["rows"]] == ["raw"]


def test_ultralytics_layout_adapter(tmp_path: Path):
    """(1, 4 + C, A) cx,cy,w,h + scores -> boxes (1, A, 4) xyxy and scores (1, A, C)."""
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
    dst = latency.ultralytics_to_understudy(src, tmp_path / "yolo-us.onnx", spec)
    b = open_backend(dst)
    assert b.spec == spec
    out = b.infer(np.zeros((1, 3, 64, 64), np.float32))
    np.testing.assert_allclose(out["boxes"][0], [[8, 17, 12, 23], [25, 25, 35, 35], [49, 1, 51, 9]])
    np.testing.assert_allclose(out["scores"][0], raw[0, 4:].T)
