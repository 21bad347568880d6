"""`understudy auto`: the latency screen, frontier, teacher ranking, selection, exit codes,
resumability and report, with fake backends/proxies of known numbers; plus real runs of
the grid-point adapter (a tiny distillation) and of the screen on ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import distill.auto.run as auto_run
from distill.auto.grid import Candidate, GridConfig, candidates, load_grid, matching_preset
from distill.auto.report import FinalResult, TeacherReference
from distill.auto.screen import LatencyResult, ScreenRow, apply_budget, pareto_frontier, select
from distill.auto.student import _check_same_run, architecture_keys, distill_candidate
from distill.auto.teacher_screen import ProxyResult, rank, screen_teachers
from distill.models.presets import PRESETS
from runtime.budget import parse_budget
from runtime.cli import main
from runtime.errors import ConfigError

GRID = "widths: [0.125, 0.25]\ndepths: [0.33, 0.67]\ninputs: [64, 96]\nwarmup: 1\nruns: 3\n"


def lat(p50: float, p99: float | None = None) -> LatencyResult:
    return LatencyResult("fake", 1, p50, p99 if p99 is not None else p50 * 1.2)


class FakeMeasure:
    """Known latencies by candidate name (p50 = offset + 10 x width x depth x input / 64
    unless given); counts its calls."""

    def __init__(self, table: dict[str, tuple[float, float]] | None = None, offset: float = 0):
        self.table, self.offset = table or {}, offset
        self.calls: list[str] = []

    def __call__(self, c: Candidate) -> LatencyResult:
        self.calls.append(c.name)
        if c.name in self.table:
            return lat(*self.table[c.name])
        return lat(self.offset + 10 * c.width * c.depth * c.input / 64)


def fake_cost(c: Candidate) -> tuple[int, int]:
    return int(1e9 * c.width * c.depth * c.input / 64), int(1e6 * c.width)


@pytest.fixture
def files(tmp_path: Path):
    def write(budget: str, grid: str = GRID) -> tuple[Path, Path]:
        (tmp_path / "budget.yaml").write_text(budget)
        (tmp_path / "grid.yaml").write_text(grid)
        return tmp_path / "budget.yaml", tmp_path / "grid.yaml"

    return write


def options(tiny_data: Path, budget: Path, grid: Path, out: Path, **kw) -> auto_run.AutoOptions:
    return auto_run.AutoOptions(data=str(tiny_data), budget=str(budget), out=str(out),
                                grid=str(grid), progress=False, **kw)  # fmt: skip


def rows_of(table: dict[str, tuple[int, float, float]]) -> list[ScreenRow]:
    """Rows from {name: (flops, p50, p99)} (names must parse as w-d-input)."""
    out = []
    for name, (flops, p50, p99) in table.items():
        w, d, s = name.split("-")
        out.append(
            ScreenRow(Candidate(float(w[1:]), float(d[1:]), int(s)), flops, 0, lat(p50, p99))
        )
    return out


# -- screen, frontier, selection ---------------------------------------------------------
def test_screen_keeps_exactly_the_candidates_under_the_budget(tiny_data, files, tmp_path):
    known = {
        "w0.125-d0.33-64": (4.0, 6.0),  # meets both
        "w0.125-d0.33-96": (10.0, 15.0),  # exactly at both limits: meets
        "w0.125-d0.67-64": (9.0, 15.5),  # p50 fine, p99 over
        "w0.125-d0.67-96": (10.5, 12.0),  # p50 over
        "w0.25-d0.33-64": (8.0, 14.0),  # meets
        "w0.25-d0.33-96": (30.0, 40.0),
        "w0.25-d0.67-64": (20.0, 25.0),
        "w0.25-d0.67-96": (50.0, 60.0),
    }
    budget, grid = files("latency:\n  p50_ms: 10\n  p99_ms: 15\n")
    measure = FakeMeasure(known)
    report = auto_run.run_auto(options(tiny_data, budget, grid, tmp_path / "out"),
                               measure=measure, cost=fake_cost)  # fmt: skip
    assert sorted(measure.calls) == sorted(known)
    meets = {r.candidate.name for r in report.screen if r.meets}
    assert meets == {"w0.125-d0.33-64", "w0.125-d0.33-96", "w0.25-d0.33-64"}
    misses = {r.candidate.name: r.failures for r in report.screen}
    assert misses["w0.125-d0.67-64"] == ("p99 15.50 ms > 15 ms",)
    assert misses["w0.125-d0.67-96"] == ("p50 10.50 ms > 10 ms",)
    # the largest (most FLOPs) of those that meet: 0.25*0.33*64/64 > 0.125*0.33*96/64
    assert report.chosen == ["w0.25-d0.33-64"]
    assert report.status == "screen_only"


def test_frontier_is_the_set_no_candidate_beats_on_both_axes():
    rows = rows_of({
        "w0.1-d0.3-64": (100, 1.0, 1.0),  # fastest: on the frontier
        "w0.2-d0.3-64": (90, 2.0, 2.0),  # slower and smaller than the first: dominated
        "w0.3-d0.3-64": (300, 3.0, 9.0),  # on
        "w0.4-d0.3-64": (250, 3.0, 3.0),  # same p50 as the previous, fewer FLOPs: dominated
        "w0.5-d0.3-64": (500, 5.0, 5.0),  # on
        "w0.6-d0.3-64": (500, 6.0, 6.0),  # same FLOPs, slower: dominated
    })  # fmt: skip
    assert pareto_frontier(rows, "p50_ms") == {"w0.1-d0.3-64", "w0.3-d0.3-64", "w0.5-d0.3-64"}
    # on p99 the 300-FLOP candidate is slower than the 500-FLOP one: off the frontier
    assert pareto_frontier(rows, "p99_ms") == {"w0.1-d0.3-64", "w0.4-d0.3-64", "w0.5-d0.3-64"}
    budget = parse_budget({"latency": {"p99_ms": 5.5}})
    marked = apply_budget(rows, budget)  # a p99 budget draws the frontier on p99
    assert {r.candidate.name for r in marked if r.on_frontier} == pareto_frontier(rows, "p99_ms")
    assert [r.candidate.name for r in select(marked, 2)] == ["w0.5-d0.3-64", "w0.4-d0.3-64"]


def test_grid_points_presets_and_budget_input():
    grid = GridConfig(widths=(0.1875, 0.25), depths=(0.33,), inputs=(320, 224))
    names = [c.name for c in candidates(grid)]
    assert names == ["w0.1875-d0.33-224", "w0.1875-d0.33-320", "w0.25-d0.33-224",
                     "w0.25-d0.33-320"]  # fmt: skip
    assert [c.input for c in candidates(grid, input_size=256)] == [256, 256]
    assert matching_preset(Candidate(0.1875, 0.33, 256)) == "nano"  # cap 1024 vs 256: same net
    assert matching_preset(Candidate(0.25, 0.33, 256, 256)) == "small"
    assert matching_preset(Candidate(0.25, 0.67, 256)) is None
    with pytest.raises(ConfigError, match="multiples of 32"):
        GridConfig(inputs=(100,))
    assert load_grid().inputs == (224, 256, 320)  # the documented grid


# -- teacher screen ------------------------------------------------------------------------
def test_teacher_ranking_orders_constructed_cases_and_is_reused(tmp_path):
    scores = {"big.pt": 31.0, "medium.pt": 35.5, "huge.pt": 28.0, "twin.pt": 35.5}
    calls = []

    def proxy(teacher: str) -> ProxyResult:
        calls.append(teacher)
        return ProxyResult(scores[teacher], scores[teacher] + 20, "hybrid")

    teachers = ["big.pt", "medium.pt", "huge.pt", "twin.pt"]
    ranked = screen_teachers(teachers, proxy, tmp_path, {"student": "x"}, progress=False)
    # capacity gap: the medium teacher beats the larger ones; a tie keeps the given order
    assert [t.teacher for t in ranked] == ["medium.pt", "twin.pt", "big.pt", "huge.pt"]
    assert [t.rank for t in ranked] == [1, 2, 3, 4]
    assert all(t.wall_s >= 0 and not t.reused for t in ranked)
    again = screen_teachers(teachers, proxy, tmp_path, {"student": "x"}, progress=False)
    assert calls == teachers and all(t.reused for t in again)
    assert [t.teacher for t in again] == [t.teacher for t in ranked]
    screen_teachers(["big.pt"], proxy, tmp_path, {"student": "y"}, progress=False)
    assert calls[-1] == "big.pt" and len(calls) == 5  # other settings: run again


def test_rank_is_by_score_then_given_order():
    from distill.auto.teacher_screen import TeacherScore

    s = [TeacherScore("a", 1.0, None, 0), TeacherScore("b", 3.0, None, 0),
         TeacherScore("c", 3.0, None, 0), TeacherScore("d", 2.0, None, 0)]  # fmt: skip
    assert [t.teacher for t in rank(s)] == ["b", "c", "d", "a"]


# -- exit codes through the CLI -----------------------------------------------------------
def test_budget_no_candidate_meets_exits_1_naming_the_fastest(
    tiny_data, files, tmp_path, monkeypatch, capsys
):
    budget, grid = files("latency:\n  p50_ms: 1.0\n")
    fake = FakeMeasure({"w0.125-d0.33-64": (2.5, 3.0)}, offset=3.0)  # the fastest of all
    monkeypatch.setattr(auto_run, "default_measure", lambda *a, **k: fake)
    monkeypatch.setattr(auto_run, "default_cost", lambda names: fake_cost)
    out = tmp_path / "out"
    code = main(["auto", "--data", str(tiny_data), "--budget", str(budget), "--grid", str(grid),
                 "--out", str(out), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "No candidate meets the budget" in err
    assert "w0.125-d0.33-64" in err and "p50 2.50 ms" in err
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "no_candidate" and report["chosen"] == []
    assert len(report["candidates"]) == 8 and (out / "report.md").is_file()


def test_user_errors_exit_2(tiny_data, files, tmp_path, capsys):
    budget, grid = files("min_speedup: 3\n")
    args = ["auto", "--data", str(tiny_data), "--grid", str(grid), "--out", str(tmp_path / "o")]
    assert main([*args, "--budget", str(budget)]) == 2
    assert "needs latency.p50_ms or p99_ms" in capsys.readouterr().err
    budget, grid = files("latency:\n  p50_ms: 5\n")
    assert main([*args, "--budget", str(budget), "--teachers", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt: teacher not found" in capsys.readouterr().err


# -- resumability, full flow and report ---------------------------------------------------
def test_rerun_reuses_stored_measurements(tiny_data, files, tmp_path):
    budget, grid = files("latency:\n  p50_ms: 100\n")
    out = tmp_path / "out"
    first = FakeMeasure()
    auto_run.run_auto(options(tiny_data, budget, grid, out), measure=first, cost=fake_cost)
    assert len(first.calls) == 8 and len(list((out / "screen").glob("*.json"))) == 8
    (out / "screen" / "w0.25-d0.67-96.json").unlink()  # as if interrupted before the last one
    second = FakeMeasure()
    report = auto_run.run_auto(options(tiny_data, budget, grid, out), measure=second,
                               cost=fake_cost)  # fmt: skip
    assert second.calls == ["w0.25-d0.67-96"]
    assert sum(r.reused for r in report.screen) == 7
    third = FakeMeasure()  # other measurement settings (more runs): measured again
    grid.write_text(GRID.replace("runs: 3", "runs: 4"))
    auto_run.run_auto(options(tiny_data, budget, grid, out), measure=third, cost=fake_cost)
    assert len(third.calls) == 8


def fake_final(p50: float, maps: dict[str, float] | float):
    calls = []

    def finalize(c: Candidate, teacher: str) -> FinalResult:
        calls.append((c.name, teacher))
        m = maps if isinstance(maps, float) else maps[c.name]
        return FinalResult(c.name, teacher, "hybrid", "s.pt", "s.onnx", lat(p50), m, m + 20,
                           m + 0.1, {"distill": 1.0})  # fmt: skip

    finalize.calls = calls
    return finalize


def fake_reference(teacher: str) -> TeacherReference:
    return TeacherReference(teacher, lat(40.0, 45.0), 50.0)


def test_full_run_writes_report_with_choice_teachers_and_gate(tiny_data, files, tmp_path):
    budget, grid = files("latency:\n  p50_ms: 1\nmin_speedup: 4\nmin_accuracy_retention: 0.8\n")
    teachers = []
    for name in ("large.pt", "medium.pt"):
        (tmp_path / name).write_bytes(b"x")
        teachers.append(str(tmp_path / name))
    out = tmp_path / "out"
    finalize = fake_final(0.9, {"w0.125-d0.67-64": 42.0, "w0.25-d0.33-64": 45.0})
    report = auto_run.run_auto(
        options(tiny_data, budget, grid, out, teachers=tuple(teachers), top_k=2),
        measure=FakeMeasure(), cost=fake_cost,
        proxy=lambda t: ProxyResult(30.0 if "large" in t else 33.0),
        finalize=finalize, reference=fake_reference,
    )  # fmt: skip
    # p50 = 10 w d s / 64 <= 1 ms for w0.125-d0.33-64/96, w0.125-d0.67-64, w0.25-d0.33-64;
    # FLOPs grow with p50: the two largest of those are
    assert report.chosen == ["w0.125-d0.67-64", "w0.25-d0.33-64"]
    assert report.best_teacher.endswith("medium.pt")  # better proxy score than the larger one
    assert [c for c, _ in finalize.calls] == report.chosen
    assert report.status == "passed"
    assert report.selected == "w0.25-d0.33-64"  # both pass the gate: the better mAP wins
    gate = {c.check: c for c in report.finals[0].gate}
    assert gate["speedup_vs_teacher"].value == pytest.approx(40.0 / 0.9, rel=1e-3)
    assert gate["accuracy_retention"].value == pytest.approx(42.0 / 50.0, rel=1e-3)
    data = json.loads((out / "report.json").read_text())
    assert data["status"] == "passed" and data["chosen"] == report.chosen
    assert [t["rank"] for t in data["teachers"]] == [1, 2]
    assert data["finals"][0]["gate"] and data["finals"][0]["passed"] is True
    assert set(data["stage_seconds"]) >= {"latency screen", "teacher screen"}
    md = (out / "report.md").read_text()
    assert "This is a CPU screen" in md and "--backend tensorrt" in md
    assert "## Teacher screen" in md and "Budget gate" in md and "w0.25-d0.33-64" in md
    assert (out / "frontier.png").stat().st_size > 1000


def test_final_gate_failure_exits_1(tiny_data, files, tmp_path, monkeypatch, capsys):
    budget, grid = files("latency:\n  p50_ms: 5\n")
    (tmp_path / "t.pt").write_bytes(b"x")
    monkeypatch.setattr(auto_run, "default_measure", lambda *a, **k: FakeMeasure())
    monkeypatch.setattr(auto_run, "default_cost", lambda names: fake_cost)
    monkeypatch.setattr(auto_run, "default_final",
                        lambda *a, **k: (fake_final(7.0, 30.0), fake_reference))  # fmt: skip
    code = main(["auto", "--data", str(tiny_data), "--budget", str(budget), "--grid", str(grid),
                 "--teachers", str(tmp_path / "t.pt"), "--out", str(tmp_path / "o"),
                 "--no-progress"])  # fmt: skip
    assert code == 1
    assert "misses the budget gate (student_p50_ms)" in capsys.readouterr().out


# -- real pieces ------------------------------------------------------------------------------
def test_same_run_guard(tmp_path):
    _check_same_run(tmp_path, {"config": {"epochs": 1}, "teacher": "a"})
    _check_same_run(tmp_path, {"config": {"epochs": 1}, "teacher": "a"})
    with pytest.raises(ConfigError, match="different config"):
        _check_same_run(tmp_path, {"config": {"epochs": 2}, "teacher": "a"})


def test_grid_point_off_the_presets_distils_into_a_valid_checkpoint(
    tiny_data, tiny_checkpoint, tmp_path
):
    from distill.checkpoint import load_detector
    from distill.config import load
    from distill.distillation import DistillConfig

    before = dict(PRESETS)
    c = Candidate(0.125, 0.67, 64)
    keys = architecture_keys(c)
    assert keys == {"model": "nano", "width": 0.125, "depth": 0.67, "max_channels": 1024}
    nano = PRESETS["nano"]
    assert architecture_keys(Candidate(nano.width, nano.depth, 64, nano.max_channels)) == {
        "model": "nano", "width": 0.0, "depth": 0.0, "max_channels": 0}  # fmt: skip
    cfg = load(DistillConfig, None, ["epochs=1", "batch_size=4", "max_steps=1", "bf16=off"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path, method = distill_candidate(c, cfg, tiny_checkpoint, tiny_data, tmp_path / "run",
                                         progress=False)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert before == PRESETS and method.startswith("hybrid")
    _, info = load_detector(path)  # loads by its stored scale, no registration needed
    assert info["scale"] == {"width": 0.125, "depth": 0.67, "max_channels": 1024}
    assert info["img_size"] == 64 and info["preset"] == "w0.125-d0.67"
    again, _ = distill_candidate(c, cfg, tiny_checkpoint, tiny_data, tmp_path / "run")
    assert again == path  # finished: reused


def test_real_screen_on_onnxruntime(tiny_data, files, tmp_path):
    budget, grid = files(
        "latency:\n  p50_ms: 10000\n",
        "widths: [0.125]\ndepths: [0.33]\ninputs: [64]\nwarmup: 2\nruns: 5\n"
        "frame_width: 160\nframe_height: 120\ncalibration_batches: 1\n",
    )
    out = tmp_path / "out"
    report = auto_run.run_auto(options(tiny_data, budget, grid, out, threads=1))
    (row,) = report.screen
    assert row.meets and row.latency.backend == "onnxruntime" and row.latency.runs == 5
    assert 0 < row.latency.p50_ms <= row.latency.p99_ms
    assert row.latency.infer_ms > 0 and row.flops > 0 and row.params > 0
    assert not list((out / "screen" / "work").glob("*"))  # exported files cleaned up
    assert "onnxruntime" in report.machine and (out / "frontier.png").is_file()


# -- the teacher check ---------------------------------------------------------------------
def weak_reference(teacher: str) -> TeacherReference:
    return TeacherReference(teacher, lat(40.0, 45.0), 1.0, seconds={"evaluate": 0.5})


def test_teacher_not_ahead_of_the_baseline_stops_before_distilling(
    tiny_data, tiny_checkpoint, files, tmp_path, monkeypatch
):
    """A teacher at 1.0 mAP50-95 against a baseline scored for real (the two-step
    checkpoint, about 0): not ahead by 2 points, so nothing is distilled; --force goes on.
    The teacher is scored once (by the teacher reference), the baseline once."""
    import distill.teacher_check as tc

    budget, grid = files("latency:\n  p50_ms: 1\n")
    (tmp_path / "t.pt").write_bytes(b"x")
    scored = []
    real = tc.evaluate_reference
    monkeypatch.setattr(tc, "evaluate_reference", lambda *a, **k: scored.append(a) or real(*a, **k))
    kw = dict(teachers=(str(tmp_path / "t.pt"),), baseline=str(tiny_checkpoint))
    finalize = fake_final(0.9, 42.0)
    out = tmp_path / "out"
    report = auto_run.run_auto(
        options(tiny_data, budget, grid, out, **kw), measure=FakeMeasure(), cost=fake_cost,
        finalize=finalize, reference=weak_reference,
    )  # fmt: skip
    assert report.status == "teacher_not_ahead" and finalize.calls == [] and len(scored) == 1
    assert "teacher 1.00 mAP50-95 vs reference" in report.message
    assert "the teacher is not ahead" in report.message
    data = json.loads((out / "report.json").read_text())
    assert data["teacher_check"]["reference"]["path"] == str(tiny_checkpoint)
    assert data["teacher_check"]["passed"] is False and data["finals"] == []
    assert "## Teacher check" in (out / "report.md").read_text()

    report = auto_run.run_auto(
        options(tiny_data, budget, grid, tmp_path / "forced", force=True, **kw),
        measure=FakeMeasure(), cost=fake_cost, finalize=finalize, reference=weak_reference,
    )  # fmt: skip
    assert report.status == "passed" and len(finalize.calls) == 1
    assert report.teacher_check["forced"] is True
    baseline = report.teacher_check["reference"]["map50_95"]
    data = json.loads((tmp_path / "forced" / "report.json").read_text())
    assert data["finals"][0]["gain_over_baseline"] == pytest.approx(42.0 - baseline, abs=0.01)


def test_teacher_check_without_a_baseline_notes_a_low_teacher(tiny_data, files, tmp_path):
    budget, grid = files("latency:\n  p50_ms: 1\n")
    (tmp_path / "t.pt").write_bytes(b"x")
    report = auto_run.run_auto(
        options(tiny_data, budget, grid, tmp_path / "o", teachers=(str(tmp_path / "t.pt"),)),
        measure=FakeMeasure(), cost=fake_cost, finalize=fake_final(0.9, 42.0),
        reference=weak_reference,
    )  # fmt: skip
    assert report.status == "passed"
    assert any("low (under 20) and no reference" in n for n in report.notes)
