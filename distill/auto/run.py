"""``understudy auto``: choose the student (and the teacher) for a latency budget.

1. latency screen of the grid's candidates (:mod:`distill.auto.screen`);
2. teacher screen when several teachers are given (:mod:`distill.auto.teacher_screen`);
3. distil the largest budget-meeting student (or the top-k) from the best teacher,
   export, measure, evaluate, and gate it with :func:`runtime.budget.check_budget`
   (:mod:`distill.auto.final`).

Output folder layout (every piece is reused by a re-run with the same settings)::

    OUT/screen/<candidate>.json         one latency measurement per candidate
    OUT/teachers/<teacher>.json         one proxy score per teacher (+ its run folder)
    OUT/final/<candidate>-<teacher>/    distillation run, student.onnx, latency/eval JSON
    OUT/teacher/<teacher>/              the teacher's export, latency and mAP
    OUT/report.json, report.md, frontier.png

The measuring, proxy and final steps are injectable (``measure=``, ``proxy=``,
``finalize=``, ``reference=``); the ``default_*`` factories build the real ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distill.auto.grid import Candidate, GridConfig, candidates, load_grid, matching_preset
from distill.auto.report import AutoReport, FinalResult, TeacherReference, machine_description
from distill.auto.report_files import write_report
from distill.auto.screen import (
    Cost,
    Measure,
    OnnxCandidateMeasure,
    ScreenRow,
    apply_budget,
    candidate_cost,
    fastest,
    frontier_metric,
    run_screen,
    select,
)
from distill.auto.teacher_screen import DistillProxy, Proxy, screen_teachers
from distill.teacher_check import DEFAULT_MARGIN
from runtime.budget import Budget, check_budget, load_budget
from runtime.errors import ConfigError, DataError, ModelFileError

BACKENDS = ("onnxruntime", "tensorrt")
Finalize = Callable[[Candidate, str], FinalResult]
Reference = Callable[[str], TeacherReference]


@dataclass(frozen=True)
class AutoOptions:
    """The command line of ``understudy auto`` (see its --help)."""

    data: str
    budget: str
    out: str
    backend: str = "onnxruntime"
    teachers: tuple[str, ...] = ()
    unlabelled: str | None = None
    grid: str | None = None
    top_k: int = 1
    proxy_epochs: int = 3
    proxy_fraction: float = 0.25
    config: str | None = None
    overrides: tuple[str, ...] = ()
    threads: int | None = None
    progress: bool = True
    command: str = "understudy auto"
    baseline: str | None = None  # the student trained alone, for the teacher check
    teacher_margin: float = DEFAULT_MARGIN  # mAP50-95 points the teacher must lead by
    force: bool = False  # distil even when the teacher is not ahead of the baseline


class NoCandidateMeetsBudget(Exception):
    """No grid candidate meets the budget's latency lines (exit 1, not a user error)."""


# -- the real steps (tests replace them) -------------------------------------------------
def default_measure(
    opts: AutoOptions, grid: GridConfig, class_names: tuple[str, ...], batch: int
) -> Measure:
    work = Path(opts.out) / "screen" / "work"
    return OnnxCandidateMeasure(
        work, class_names, backend=opts.backend, grid=grid, batch=batch, threads=opts.threads
    )


def default_cost(class_names: tuple[str, ...]) -> Cost:
    return lambda c: candidate_cost(c, len(class_names))


def default_proxy(opts: AutoOptions, candidate: Candidate, cfg) -> DistillProxy:
    return DistillProxy(
        candidate,
        cfg,
        opts.data,
        Path(opts.out) / "teachers" / "runs",
        epochs=opts.proxy_epochs,
        fraction=opts.proxy_fraction,
        unlabelled=opts.unlabelled,
        progress=opts.progress,
    )


def default_final(opts: AutoOptions, cfg, split, grid: GridConfig, batch: int):
    from distill.auto.final import FinalStage, Measurer, TeacherReferenceStage

    measurer = Measurer(opts.backend, batch, grid, opts.threads)
    out = Path(opts.out)
    finalize = FinalStage(
        cfg,
        opts.data,
        split,
        out / "final",
        measurer,
        unlabelled=opts.unlabelled,
        progress=opts.progress,
    )
    return finalize, TeacherReferenceStage(split, out / "teacher", measurer, opts.progress)


# -- checks -------------------------------------------------------------------------------
def _validate(opts: AutoOptions) -> None:
    if opts.backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {opts.backend!r}")
    if opts.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {opts.top_k}")
    if opts.proxy_epochs < 1:
        raise ConfigError(f"--proxy-epochs must be >= 1, got {opts.proxy_epochs}")
    if not 0 < opts.proxy_fraction <= 1:
        raise ConfigError(f"--proxy-fraction must be in (0, 1], got {opts.proxy_fraction}")
    for t in opts.teachers:
        if not Path(t).is_file():
            raise ModelFileError(f"{t}: teacher not found; pass a checkpoint (.pt) or an .onnx")
        if Path(t).suffix.lower() not in (".pt", ".onnx"):
            raise ModelFileError(f"{t}: a teacher is a checkpoint (.pt) or an ONNX file (.onnx)")
    if len(set(opts.teachers)) != len(opts.teachers):
        raise ConfigError("--teachers lists the same teacher twice")
    if opts.unlabelled and not Path(opts.unlabelled).is_dir():
        raise DataError(f"{opts.unlabelled}: --unlabelled must be a folder of images")
    if opts.baseline and not Path(opts.baseline).is_file():
        raise ModelFileError(f"{opts.baseline}: --baseline not found; pass a checkpoint (.pt)")
    if opts.teacher_margin < 0:
        raise ConfigError(f"--teacher-margin must be >= 0 points, got {opts.teacher_margin}")


def _stage(report: AutoReport, out: Path, name: str, t0: float) -> None:
    """Record a stage's wall time for this run, and add it to the total over every run
    in ``out`` (``out/stage_seconds.json``), so that a resumed run still reports what
    each stage cost in all."""
    from distill.auto.store import read_json, write_json

    seconds = round(time.perf_counter() - t0, 1)
    report.stage_seconds[name] = seconds
    path = out / "stage_seconds.json"
    total = read_json(path) or {}
    total[name] = round(float(total.get(name, 0.0)) + seconds, 1)
    write_json(path, total)
    report.stage_seconds_total = total


def run_auto(
    opts: AutoOptions,
    *,
    measure: Measure | None = None,
    cost: Cost | None = None,
    proxy: Proxy | None = None,
    finalize: Finalize | None = None,
    reference: Reference | None = None,
) -> AutoReport:
    """Run the three stages and write the report (after each stage). Raises
    :class:`NoCandidateMeetsBudget` when nothing in the grid meets the budget."""
    from distill.config import load
    from distill.distillation import DistillConfig
    from runtime.data.dataset import load_split

    _validate(opts)
    budget = load_budget(opts.budget)
    if budget.latency.p50_ms is None and budget.latency.p99_ms is None:
        raise ConfigError(f"{opts.budget}: `understudy auto` needs latency.p50_ms or p99_ms")
    grid = load_grid(opts.grid)
    split = load_split(opts.data, "val")
    names = tuple(split.class_names)
    cfg = load(DistillConfig, opts.config, list(opts.overrides)) if opts.teachers else None
    batch = budget.latency.batch
    out = Path(opts.out)
    report = _new_report(opts, budget, grid, len(names))

    # 1. latency screen
    t0 = time.perf_counter()
    rows = run_screen(
        candidates(grid, budget.latency.input),
        measure or default_measure(opts, grid, names, batch),
        cost or default_cost(names),
        out / "screen",
        report.settings,
        preset_of=matching_preset,
        progress=opts.progress,
    )
    chosen = _screened(report, rows, opts.top_k, out, t0)
    if not chosen:
        report.status, report.message = "no_candidate", _no_candidate(report)
        write_report(report, out)
        raise NoCandidateMeetsBudget(report.message)
    if not opts.teachers:
        report.status = "screen_only"
        report.message = "No --teachers given: stopped after the latency screen."
        write_report(report, out)
        return report

    # 2. teacher screen
    best = opts.teachers[0]
    if len(opts.teachers) > 1:
        best = _screen_teachers(report, opts, chosen[0].candidate, proxy, cfg, out)
    report.best_teacher = best
    write_report(report, out)

    # 3. distil, export, measure, gate
    if finalize is None or reference is None:
        real_final, real_ref = default_final(opts, cfg, split, grid, batch)
        finalize, reference = finalize or real_final, reference or real_ref
    _teacher_reference(report, best, reference, out)
    if not _teacher_check(report, opts, split):
        write_report(report, out)
        return report
    _finals(report, chosen, best, finalize, out)
    _decide(report)
    write_report(report, out)
    return report


def _new_report(opts: AutoOptions, budget: Budget, grid: GridConfig, classes: int) -> AutoReport:
    """An empty report: the command, machine, budget, grid and measuring settings."""
    from distill.config import to_dict

    batch = budget.latency.batch
    machine = machine_description(opts.backend)
    settings = {
        "backend": opts.backend,
        "batch": batch,
        "warmup": grid.warmup,
        "runs": grid.runs,
        "frame": [grid.frame_width, grid.frame_height],
        "threads": opts.threads,
        "classes": classes,
        "calibration_batches": grid.calibration_batches,
        "machine": machine,
    }
    report = AutoReport(
        opts.command, opts.backend, machine, budget, opts.budget, to_dict(grid), settings
    )
    if budget.max_memory_mb is not None:
        report.notes.append(
            "`understudy auto` does not measure memory, so the budget's max_memory_mb line "
            "fails the gate as not measured: measure it on the target with `understudy bench`."
        )
    return report


def _screened(
    report: AutoReport, rows: list[ScreenRow], top_k: int, out: Path, t0: float
) -> list[ScreenRow]:
    """Put the screen's ``rows`` (started at ``t0``) in the report with the budget applied;
    returns the ``top_k`` chosen candidates (none when no candidate meets the budget)."""
    report.screen = apply_budget(rows, report.budget)
    _stage(report, out, "latency screen", t0)
    reused = sum(r.reused for r in rows)
    if reused:
        report.notes.append(
            f"{reused} of {len(rows)} screen measurements were reused from "
            f"{out / 'screen'} (same backend, batch, runs and machine)."
        )
    chosen = select(report.screen, top_k)
    report.chosen = [r.candidate.name for r in chosen]
    return chosen


def _no_candidate(report: AutoReport) -> str:
    """Why nothing was chosen, naming the fastest candidate and what it misses."""
    f = fastest(report.screen, frontier_metric(report.budget))
    return (
        f"No candidate meets the budget: the fastest, {f.candidate.name}, takes "
        f"p50 {f.latency.p50_ms:.2f} ms / p99 {f.latency.p99_ms:.2f} ms on {report.backend} "
        f"({'; '.join(f.failures)}). Relax the budget, add smaller points to the grid, "
        "or use a faster backend/device."
    )


def _screen_teachers(
    report: AutoReport,
    opts: AutoOptions,
    student: Candidate,
    proxy: Proxy | None,
    cfg,
    out: Path,
) -> str:
    """Rank the teachers by distilling ``student`` for a short proxy run each; returns the
    best one."""
    t0 = time.perf_counter()
    px = proxy or default_proxy(opts, student, cfg)
    teacher_settings = (
        px.settings()
        if isinstance(px, DistillProxy)
        else {
            "student": student.name,
            "epochs": opts.proxy_epochs,
            "fraction": opts.proxy_fraction,
        }
    )
    report.teachers = screen_teachers(
        opts.teachers, px, out / "teachers", teacher_settings, progress=opts.progress
    )
    _stage(report, out, "teacher screen", t0)
    return report.teachers[0].teacher


def _teacher_reference(
    report: AutoReport, teacher: str, reference: Reference, out: Path
) -> TeacherReference:
    """Export, time and evaluate the chosen ``teacher`` (for the gate and the check)."""
    t0 = time.perf_counter()
    report.teacher_reference = ref = reference(teacher)
    if ref.map50_95 == 0:
        report.notes.append("The teacher's mAP50-95 is 0, so accuracy retention is undefined.")
    _stage(report, out, "teacher reference", t0)
    return ref


def _teacher_check(report: AutoReport, opts: AutoOptions, split) -> bool:
    """The teacher check (distill/teacher_check.py) on the teacher reference's mAP (no
    second evaluation) and ``opts.baseline``; False (status ``teacher_not_ahead``) when the
    teacher does not lead the baseline by the margin and ``opts.force`` is off."""
    from distill.teacher_check import Score, TeacherNotAhead, check_teacher

    ref = report.teacher_reference
    if ref is None or ref.map50_95 is None:
        report.notes.append("Teacher check skipped: the teacher was not evaluated.")
        return True
    seconds = float(ref.seconds.get("evaluate", 0.0))
    how = "its export evaluated through the runtime (teacher reference)"
    score = Score("teacher", ref.teacher, ref.map50_95, None, seconds, how)
    try:
        check = check_teacher(
            ref.teacher,
            split,
            0,
            reference=opts.baseline,
            margin=opts.teacher_margin,
            force=opts.force,
            teacher_score=score,
            progress=opts.progress,
        )
    except TeacherNotAhead as e:
        report.teacher_check = e.check.to_dict()
        report.status, report.message = "teacher_not_ahead", str(e)
        return False
    report.teacher_check = check.to_dict()
    if check.low or check.forced:
        report.notes.append(check.message)
    return True


def _finals(
    report: AutoReport,
    chosen: list[ScreenRow],
    teacher: str,
    finalize: Finalize,
    out: Path,
) -> None:
    """Distil, export, measure and gate every chosen student from ``teacher`` (the report
    is written after each)."""
    budget = report.budget
    ref = report.teacher_reference
    t0 = time.perf_counter()
    for row in chosen:
        result = finalize(row.candidate, teacher)
        result.gate = check_budget(
            budget,
            student_p50_ms=result.latency.p50_ms,
            student_p99_ms=result.latency.p99_ms,
            teacher_p50_ms=ref.latency.p50_ms if ref.latency else None,
            student_map=result.map50_95,
            teacher_map=ref.map50_95,
            input_size=row.candidate.input,
        )
        report.finals.append(result)
        write_report(report, out)
    _stage(report, out, "distill + export + measure + evaluate", t0)


def _decide(report: AutoReport) -> None:
    """Select the final student (the best mAP50-95 of those passing the gate, else of
    all) and set the report's status and message."""
    passing = [f for f in report.finals if f.passed]
    pool = passing or report.finals
    pick = max(pool, key=lambda f: f.map50_95 if f.map50_95 is not None else -1.0)
    report.selected = pick.candidate
    if passing:
        report.status = "passed"
        report.message = f"{pick.candidate} meets every line of the budget" + (
            " (the best mAP50-95 of the passing top-k)." if len(report.finals) > 1 else "."
        )
    else:
        failed = "; ".join(c.check for c in pick.gate if not c.passed)
        report.status = "gate_failed"
        report.message = f"The distilled student misses the budget gate ({failed})."
