"""The one-command demo, in its reduced profile (CI runs it on every submission)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.cli import main


@pytest.mark.timeout(900)
def test_tiny_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["demo", "--profile", "tiny", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    for name in (
        "student.onnx",
        "student.int8.onnx",
        "teacher.onnx",
        "stream.mp4",
        "bench/budget.json",
        "bench/budget.md",
        "student/model.pt",
        "teacher/model.pt",
    ):
        assert (tmp_path / name).is_file(), name
    report = json.loads((tmp_path / "bench" / "budget.json").read_text())
    assert report["student"]["p50_ms"] > 0 and report["teacher"]["p50_ms"] > 0
    assert {r["check"] for r in report["rows"]} >= {"student_p99_ms", "speedup_vs_teacher"}
    assert "== summary" in out and "files written:" in out and "budget gate:" in out
