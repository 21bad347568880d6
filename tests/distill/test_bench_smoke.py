"""benchmarks.decode, benchmarks.train_speed and the budget step of benchmarks.auto on tiny
inputs: each writes its results in the format of benchmarks/README.md."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import auto, decode, train_speed
from distill.export import export_onnx


def test_decode_benchmark(tiny_data: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    model = export_onnx(tiny_checkpoint, tmp_path / "m.onnx").path
    out = tmp_path / "decode.json"
    argv = ["--model", str(model), "--data", str(tiny_data), "--video"]
    argv += [str(tiny_data / "video.mp4"), "--frames", "2", "--repeats", "1", "--out", str(out)]
    assert decode.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["command"].startswith("python -m benchmarks.decode --model ")
    assert set(doc) >= {"machine", "date", "rows", "video_agreement"}
    assert [r["decode"] for r in doc["rows"]] == ["full", "reduced"]
    for r in doc["rows"]:
        assert r["decode_p50_ms"] > 0 and 0 <= r["val2x_map50_95"] <= 100
    assert doc["video_agreement"]["frames"] == 2
    assert "| reduced |" in out.with_suffix(".md").read_text()


def test_train_speed_benchmark(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "train_speed.json"
    argv = ["--data", str(tiny_data), "--presets", "nano", "--size", "64", "--batch", "2"]
    assert train_speed.main([*argv, "--steps", "1", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["command"].startswith("python -m benchmarks.train_speed --data ")
    (row,) = doc["rows"]
    assert row["model"] == "nano" and row["fp32_images_per_s"] > 0 and row["bf16_speedup"] > 0


def test_auto_budget_reuses_its_calibration_and_runs_auto_on_it(tmp_path: Path) -> None:
    args = argparse.Namespace(
        out=tmp_path,
        recalibrate=False,
        pin_input=True,
        size=256,
        data="data/synth",
        teachers=["t.pt"],
        config="configs/bench_distill.yaml",
        grid="g.yaml",
        unlabelled=None,
        threads=2,
    )
    (tmp_path / "calibration.json").write_text(json.dumps({"p50_ms": 8.8}))
    budget, calibration = auto.write_budget(args)  # a resumed run: nothing measured
    assert calibration == {"p50_ms": 8.8}
    assert budget.read_text() == "latency:\n  p50_ms: 8.8\n  batch: 1\n  input: 256\n"
    cmd = auto.auto_command(args, budget)
    assert cmd[1:4] == ["-m", "runtime.cli", "auto"] and cmd[-2:] == ["--threads", "2"]
    assert cmd[cmd.index("--budget") + 1] == str(budget)
    assert cmd[cmd.index("--teachers") + 1] == "t.pt"
