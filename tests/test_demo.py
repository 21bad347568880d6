"""The one-command demo, in its reduced profile (CI runs it on every submission), within
a time budget."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from runtime.cli import main
from runtime.model_spec import ModelSpec


@pytest.mark.timeout(900)
def test_tiny_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["demo", "--profile", "tiny", "--out", str(tmp_path), "--minutes", "2.5"])
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
    # the printed verdict is the gate's own (budget.json), every frame sent is accounted for,
    # and the INT8 file really is an int8 Q/DQ model
    verdict = re.search(r"budget gate: (PASSED|FAILED)", out).group(1)
    assert verdict == ("PASSED" if report["passed"] else "FAILED")
    streamed = json.loads((tmp_path / "stream.json").read_text())
    assert streamed["sent"] > 0 and streamed["errors"] == 0
    assert streamed["answered"] + streamed["dropped"] == streamed["sent"]
    int8 = ModelSpec.read_sidecar(tmp_path / "student.int8.onnx")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "student.int8.onnx")).graph.node}
    assert int8.precision == "int8" and {"QuantizeLinear", "DequantizeLinear"} <= ops
    # the plan, printed before training: measured speeds, epochs, stages, the split
    plan = out[out.index("budget 2.5 min (150 s)") : out.index("== teacher")]
    assert "teacher (small):" in plan and "student (nano, distilled):" in plan
    assert "s/step x 3 steps" in plan and "split: training" in plan
    for stage in ("data", "plan", "teacher", "student", "export", "serve + stream", "gate"):
        assert f"\n  {stage} " in plan, stage
    epochs = re.search(r"epochs: teacher (\d+), student (\d+)", out)
    assert epochs and all(1 <= int(e) <= 2 for e in epochs.groups())  # tiny's cap: 2
    # the summary: the budget's split and the wall time of every stage against the plan
    assert "time budget: 2.5 min, split: training" in out
    table = out[out.index("stage            planned s    took s") :]
    for stage in ("data", "plan", "teacher", "student", "export", "serve + stream", "gate"):
        assert re.search(rf"\n{re.escape(stage)} +\d+ +\d+\n", table), stage
    assert re.search(r"\ntotal +\d+ +\d+ +\(\d+\.\d min, (within|OVER) the 2\.5 min", table)


def test_demo_minutes_must_be_positive(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--minutes", "0"])
    assert exc.value.code == 2 and "--minutes must be a number > 0" in capsys.readouterr().err


def test_demo_makes_torchs_threads_wait_passively() -> None:
    """Spinning OpenMP threads slow training up to 10x on shared cores: the demo asks for
    passive waiting before torch is imported, unless the user chose otherwise."""
    probe = (
        "import os, sys, types\n"
        "fake = types.ModuleType('distill.demo')\n"
        "fake.run_demo = lambda *a: print('policy', os.environ.get('OMP_WAIT_POLICY')) or 0\n"
        "sys.modules['distill.demo'] = fake\n"
        "from runtime.cli import main\n"
        "sys.exit(main(['demo']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "policy PASSIVE" in out.stdout, out.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert "policy ACTIVE" in out.stdout, out.stderr
