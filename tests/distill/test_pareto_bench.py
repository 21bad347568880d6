"""benchmarks.pareto: points from the accuracy rows, latency of random-weight exports
measured in one run, the frontier, and the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import pareto


def _row(model: str, size: str, seed: int, value: float, **extra: object) -> dict:
    return {"model": model, "size": size, "seed": seed, "labelled_fraction": 1.0,
            "precision": "fp32", "map50_95": value, **extra}  # fmt: skip


ROWS = [
    _row("teacher", "small", 0, 70.0),
    _row("scratch", "nano", 0, 50.0),
    _row("scratch", "nano", 1, 52.0),
    _row("hybrid", "nano", 0, 60.0),
    _row("hybrid", "nano", 1, 62.0),
    _row("hybrid", "nano", 0, 64.0, recipe="strong"),  # another recipe: left out
    _row("hybrid", "nano", 0, 59.0, int8=True, precision="int8"),  # INT8: left out
    {**_row("pseudo", "nano", 0, 45.0), "labelled_fraction": 0.2},  # fewer labels
    _row("peer-yolo11n", "yolo11n", 0, 47.0),
]


def test_points_average_the_seeds_of_the_benchmark_recipe() -> None:
    points = {p["point"]: p for p in pareto.accuracy_points(ROWS)}
    assert set(points) == {"teacher", "scratch nano", "distilled nano", "peer-yolo11n"}
    assert points["scratch nano"]["map50_95"] == 51.0 and points["scratch nano"]["seeds"] == [0, 1]
    assert points["distilled nano"]["map50_95"] == 61.0
    assert points["teacher"]["architecture"] == "small"
    assert points["peer-yolo11n"]["architecture"] == "yolo11n"


def test_frontier() -> None:
    points = [
        {"point": "a", "map50_95": 50.0, "p50_ms": 5.0},
        {"point": "b", "map50_95": 60.0, "p50_ms": 5.0},  # beats a: as fast, more accurate
        {"point": "c", "map50_95": 70.0, "p50_ms": 40.0},
        {"point": "d", "map50_95": 55.0, "p50_ms": 20.0},  # slower and worse than b
        {"point": "e", "map50_95": 80.0, "p50_ms": None},  # not timed: never on it
    ]
    pareto.mark_frontier(points)
    assert [p["point"] for p in points if p["frontier"]] == ["b", "c"]


def test_pareto_writes_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    acc = tmp_path / "accuracy.json"
    acc.write_text(json.dumps({"rows": ROWS[:-1]}))  # no peer row
    monkeypatch.setattr(pareto, "PEER_ONNX", tmp_path / "no-peer.onnx")
    argv = ["--accuracy", str(acc), "--size", "64", "--runs", "3", "--warmup", "1"]
    argv += ["--work", str(tmp_path / "work"), "--out-dir", str(tmp_path / "out")]
    assert pareto.main(argv) == 0
    doc = json.loads((tmp_path / "out" / "pareto.json").read_text())
    assert doc["command"].startswith("python -m benchmarks.pareto") and doc["machine"]
    points = {p["point"]: p for p in doc["rows"]}
    assert all(p["p50_ms"] > 0 and p["p99_ms"] >= p["p50_ms"] for p in points.values())
    # the nano's two points share one timed export: the same latency
    assert points["scratch nano"]["p50_ms"] == points["distilled nano"]["p50_ms"]
    assert points["teacher"]["frontier"] or points["distilled nano"]["frontier"]
    assert not points["scratch nano"]["frontier"]  # as fast as the distilled one, worse
    assert any("peer-yolo11n" in m for m in doc["missing"])
    assert any(m.startswith("scratch small") for m in doc["missing"])
    md = (tmp_path / "out" / "pareto.md").read_text()
    assert "| distilled nano | nano |" in md and "Missing:" in md
    assert (tmp_path / "out" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(f.name for f in (tmp_path / "work").glob("*.onnx")) == [
        "nano-64.onnx",
        "small-64.onnx",
    ]
