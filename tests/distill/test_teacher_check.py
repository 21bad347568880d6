"""The teacher check before distilling, and the report after it.

The strong teacher is the ``overfit`` fixture's "learned" run (mAP50 79-100 on the
handful's val images); the weak ones are its "frozen" twin (lr=0) and ``tiny_checkpoint``
(two training steps). Every number checked here comes from a real evaluation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import distill.evaluate
import distill.teacher_check as tc
from runtime.cli import main
from runtime.data.dataset import load_split
from runtime.errors import ConfigError, ModelFileError
from tests.distill.handful import PLAIN, SIZE

FAST = ["--no-progress", "--set", "kd.teacher_bf16=off"]


def _distill(data: Path, teacher: Path, out: Path, *extra: str) -> int:
    """`understudy distill` for one step on ``data`` (``extra``: the check's flags)."""
    argv = ["distill", "--teacher", str(teacher), "--data", str(data), "--out", str(out)]
    argv += ["--method", "logit", *FAST, "--set", "max_steps=1"]
    return main([*argv, *(a for p in PLAIN for a in ("--set", p)), *extra])


def _count_evaluations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of images of every COCO evaluation of a torch model or teacher."""
    calls: list[int] = []
    real = distill.evaluate.coco_evaluate

    def counting(split, predictions):
        calls.append(len(predictions))
        return real(split, predictions)

    monkeypatch.setattr(distill.evaluate, "coco_evaluate", counting)
    return calls


def test_a_weak_teacher_stops_distill_with_the_numbers(
    tmp_path: Path, handful: Path, overfit: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    code = _distill(handful, overfit["frozen"], out, "--baseline", str(overfit["learned"]))
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line
    assert err.startswith("understudy distill: teacher check (")
    assert re.search(r"teacher \d+\.\d\d mAP50-95 vs reference \d+\.\d\d \(.*learned", err)
    assert re.search(r": -\d+\.\d\d points, margin 2: the teacher is not ahead", err), err
    assert "the teacher is not ahead" in err and "--force" in err
    assert "train the teacher longer or on more data" in err
    assert not (out / "model.pt").exists()


def test_force_distils_from_the_weak_teacher_and_the_report_says_what_it_bought(
    tmp_path: Path,
    handful: Path,
    overfit: dict[str, Path],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _count_evaluations(monkeypatch)
    out = tmp_path / "run"
    baseline = ["--baseline", str(overfit["learned"])]
    assert _distill(handful, overfit["frozen"], out, *baseline, "--force") == 0
    stdout = capsys.readouterr().out
    assert "distilling anyway (--force)" in stdout
    assert (out / "model.pt").is_file()
    # teacher, reference, and the student's final evaluation in training: once each
    assert calls == [4, 4, 4]
    report = json.loads((out / "distill_report.json").read_text())
    for key in ("teacher", "reference", "student", "gain", "retention", "teacher_lead", "check"):
        assert key in report, key
    assert report["check"]["forced"] is True and report["check"]["passed"] is False
    assert report["teacher"]["path"] == str(overfit["frozen"])
    assert report["reference"]["path"] == str(overfit["learned"])
    assert report["reference"]["map50_95"] > 30  # the strong run, scored here
    student = report["student"]["map50_95"]
    assert report["gain"] == pytest.approx(student - report["reference"]["map50_95"], abs=0.01)
    assert report["gain"] < 0  # one step from a teacher that knows nothing
    md = (out / "distill_report.md").read_text()
    assert "| teacher |" in md and "| reference |" in md and "| student |" in md
    assert "distillation did not help here" in md


def test_a_strong_teacher_passes_the_check(
    tmp_path: Path,
    handful: Path,
    overfit: dict[str, Path],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The learned run is far ahead of the frozen one: distilling goes on, no --force."""
    calls = _count_evaluations(monkeypatch)
    out = tmp_path / "run"
    assert _distill(handful, overfit["learned"], out, "--baseline", str(overfit["frozen"])) == 0
    stdout = capsys.readouterr().out
    assert "points, margin 2: distilling" in stdout
    assert len(calls) == 3
    report = json.loads((out / "distill_report.json").read_text())
    assert report["check"]["passed"] is True and report["check"]["forced"] is False
    assert report["teacher_lead"] > 30
    assert report["retention"] == pytest.approx(
        report["student"]["map50_95"] / report["teacher"]["map50_95"], abs=1e-3
    )


def test_baseline_epochs_trains_the_reference_and_scores_it_once(
    tmp_path: Path,
    handful: Path,
    overfit: dict[str, Path],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--baseline-epochs N: a scratch run into OUT/reference, scored by its own final
    evaluation (no second one); a re-run reuses it."""
    calls = _count_evaluations(monkeypatch)
    out = tmp_path / "run"
    assert _distill(handful, overfit["learned"], out, "--baseline-epochs", "1") == 0
    assert len(calls) == 3  # scratch run's final evaluation, teacher, student
    assert (out / "reference" / "model.pt").is_file()
    report = json.loads((out / "distill_report.json").read_text())
    assert report["reference"]["path"] == str(out / "reference" / "model.pt")
    assert "trained alone, epochs=1" in report["reference"]["how"]
    calls.clear()
    assert _distill(handful, overfit["learned"], out, "--baseline-epochs", "1", "--resume") == 0
    assert len(calls) == 1  # the teacher again; the reference and the finished run are reused
    report = json.loads((out / "distill_report.json").read_text())
    assert report["reference"]["how"].endswith("reused")
    # both references at once are a user error: one line, exit 2
    both = ["--baseline-epochs", "1", "--baseline", str(overfit["frozen"])]
    assert _distill(handful, overfit["learned"], tmp_path / "x", *both) == 2
    assert "pass one of them" in capsys.readouterr().err


def test_without_a_reference_a_low_teacher_gets_a_warning_not_a_stop(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["distill", "--teacher", str(tiny_checkpoint), "--data", str(tiny_data)]
    argv += ["--out", str(tmp_path / "run"), "--img-size", "64", "--batch-size", "4"]
    assert main([*argv, *FAST, "--set", "max_steps=1", "--set", "bf16=off"]) == 0
    stdout = capsys.readouterr().out
    assert "low (under 20) and no reference to compare" in stdout
    assert "--baseline" in stdout
    report = json.loads((tmp_path / "run" / "distill_report.json").read_text())
    assert report["reference"] is None and report["gain"] is None
    assert report["check"]["low"] is True


def test_the_margin_decides(handful: Path, overfit: dict[str, Path]) -> None:
    """Scores as measured, margin moved around them: ahead by less than the margin stops."""
    teacher = tc.Score("teacher", "t.pt", 40.0, 60.0, 1.0, "")
    reference = tc.Score("reference", "r.pt", 38.5, 55.0, 1.0, "")
    assert tc.decide(teacher, reference, margin=1.0).passed
    check = tc.decide(teacher, reference, margin=2.0)
    assert not check.passed and check.lead == 1.5
    assert "teacher 40.00 mAP50-95 vs reference 38.50 (r.pt): +1.50 points" in check.message
    with pytest.raises(tc.TeacherNotAhead) as e:
        tc.check_teacher(overfit["frozen"], load_split(handful, "val"), SIZE, reference=reference)
    assert re.search(r"teacher \d+\.\d\d mAP50-95 vs reference 38\.50", str(e.value))
    assert e.value.check.teacher.map50_95 < 5 and e.value.check.seconds >= 0
    assert not tc.decide(tc.Score("teacher", "t", 25.0, 30.0, 0, ""), None).low
    with pytest.raises(ConfigError, match="--teacher-margin"):
        tc.check_teacher(overfit["frozen"], load_split(handful, "val"), SIZE, margin=-1)
    with pytest.raises(ModelFileError, match=r"nothing\.pt: --baseline not found"):
        tc.check_teacher(
            overfit["frozen"], load_split(handful, "val"), SIZE, reference="nothing.pt"
        )


def test_an_onnx_teacher_is_evaluated_through_the_teacher_interface(
    tmp_path: Path, handful: Path, overfit: dict[str, Path]
) -> None:
    """The strong teacher exported to ONNX, scored on the source images through the teacher
    interface, scores what the checkpoint scores, and passes the check."""
    from distill.export import export_onnx

    onnx = tmp_path / "teacher.onnx"
    export_onnx(overfit["learned"], onnx, img_size=SIZE, validate=False)
    split = load_split(handful, "val")
    native = tc.evaluate_teacher(overfit["learned"], split, SIZE, progress=False)
    external = tc.evaluate_teacher(onnx, split, SIZE, progress=False)
    assert native.map50_95 > 30
    assert external.map50_95 == pytest.approx(native.map50_95, abs=1.0)
    check = tc.check_teacher(onnx, split, SIZE, reference=overfit["frozen"], progress=False)
    assert check.passed and check.teacher.map50_95 == external.map50_95


def test_under_torchrun_only_rank_zero_checks(
    tmp_path: Path,
    tiny_data: Path,
    tiny_checkpoint: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RANK 1 skips the check (no teacher evaluation, no report); --baseline-epochs is
    refused under torchrun before anything starts."""
    calls = _count_evaluations(monkeypatch)
    argv = ["distill", "--teacher", str(tiny_checkpoint), "--data", str(tiny_data)]
    argv += ["--img-size", "64", "--batch-size", "4", *FAST, "--set", "max_steps=1"]
    monkeypatch.setenv("RANK", "1")
    assert main([*argv, "--out", str(tmp_path / "r1"), "--baseline", str(tiny_checkpoint)]) == 0
    assert len(calls) == 1  # the student's final evaluation only (this process is rank 0 of 1)
    assert "teacher check" not in capsys.readouterr().out
    assert not (tmp_path / "r1" / "distill_report.json").exists()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*argv, "--out", str(tmp_path / "r0"), "--baseline-epochs", "1"]) == 2
    assert "--baseline-epochs under torchrun" in capsys.readouterr().err
    assert len(calls) == 1 and not (tmp_path / "r0").exists()
