"""benchmarks.latency: rows in the results format of benchmarks/README.md, merging, the YOLO
layout adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import latency

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


def test_peer_flag_adds_the_trained_peer_row(decoded_model: Path, tmp_path: Path, capsys):
    """--peer PATH: the peer's ONNX (benchmarks/peer.py) measured as row peer-yolo11n; a
    missing one says how to make it."""
    p = latency.build_parser()
    args = p.parse_args(["--peer", str(decoded_model)])
    assert latency.models_to_measure(p, args) == [(decoded_model, "peer-yolo11n")]
    assert p.parse_args(["--peer"]).peer == latency.PEER_ONNX  # the default runs/peer file
    missing = p.parse_args(["--peer", str(tmp_path / "none.onnx")])
    with pytest.raises(SystemExit):
        latency.models_to_measure(p, missing)
    assert "python -m benchmarks.peer" in capsys.readouterr().err
