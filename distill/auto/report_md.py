"""The Markdown form of an ``understudy auto`` report: the decision and why, then every
measured number (screen, frontier, teachers, final students, budget gate, wall times)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distill.auto.screen import frontier_metric

if TYPE_CHECKING:
    from distill.auto.report import AutoReport, FinalResult, TeacherReference


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 0.1 else f"{v:.2f}"
    return str(v)


def table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _budget_lines(report: AutoReport) -> list[str]:
    b = report.budget
    parts = [f"batch {b.latency.batch}"]
    parts += [
        f"{k[:3]} <= {getattr(b.latency, k):g} ms"
        for k in ("p50_ms", "p99_ms")
        if getattr(b.latency, k) is not None
    ]
    if b.latency.input is not None:
        parts.append(f"input {b.latency.input} px")
    if b.min_speedup is not None:
        parts.append(f"speedup vs teacher >= {b.min_speedup:g}x")
    if b.min_accuracy_retention is not None:
        parts.append(f"accuracy retention >= {b.min_accuracy_retention:g}")
    if b.max_memory_mb is not None:
        parts.append(f"memory <= {b.max_memory_mb:g} MB")
    return [f"Budget (`{report.budget_file}`): " + ", ".join(parts) + ".", ""]


def _decision(report: AutoReport) -> list[str]:
    lines = ["## Decision", "", f"Status: **{report.status}**. {report.message}", ""]
    rows = {r.candidate.name: r for r in report.screen}
    meeting = sorted((r for r in report.screen if r.meets), key=lambda r: -r.flops)
    if report.chosen:
        top = rows[report.chosen[0]]
        lines.append(
            f"Student: **{top.candidate.name}**"
            + (f" (= preset `{top.preset}`)" if top.preset else "")
            + f", the largest (most FLOPs: {top.flops / 1e9:.3f} GFLOPs) of the "
            f"{len(meeting)} of {len(report.screen)} candidates that meet the budget's latency "
            f"lines on {report.backend} (screened p50 {top.latency.p50_ms:.2f} ms, "
            f"p99 {top.latency.p99_ms:.2f} ms)."
        )
        bigger = sorted(
            (r for r in report.screen if r.flops > top.flops and not r.meets), key=lambda r: r.flops
        )
        if bigger:
            nb = bigger[0]
            lines.append(
                f"The next larger candidate, {nb.candidate.name} ({nb.flops / 1e9:.3f} "
                f"GFLOPs), misses: {'; '.join(nb.failures)}."
            )
        if len(report.chosen) > 1:
            lines.append(f"Top-{len(report.chosen)} distilled: {', '.join(report.chosen)}.")
        lines.append("")
    if report.best_teacher:
        why = (
            "the best proxy mAP50-95 of the teacher screen"
            if len(report.teachers) > 1
            else "the only teacher given"
        )
        lines += [f"Teacher: **{report.best_teacher}** ({why}).", ""]
    if report.selected:
        f = next(f for f in report.finals if f.candidate == report.selected)
        lines += [
            f"Final student: `{f.onnx}`: p50 {f.latency.p50_ms:.2f} ms, p99 "
            f"{f.latency.p99_ms:.2f} ms, mAP50-95 {_fmt(f.map50_95)} (exported model), budget "
            f"gate {'PASSED' if f.passed else 'FAILED'}.",
            "",
        ]
    return lines


def markdown(report: AutoReport) -> str:
    """The whole report as Markdown."""
    lines = [
        f"# understudy auto ({report.date})",
        "",
        f"Command: `{report.command}`",
        "",
        f"Machine: {report.machine}; backend **{report.backend}**.",
        "",
        f"> {report.note}",
        "",
        *_budget_lines(report),
        *_decision(report),
    ]
    if report.stage_seconds:
        lines += _stage_times(report)
    if report.screen:
        lines += _screen(report) + _frontier(report)
    if report.teachers:
        lines += _teacher_screen(report)
    if report.teacher_reference is not None:
        lines += _teacher_reference(report.teacher_reference)
    if report.teacher_check is not None:
        lines += _teacher_check(report.teacher_check)
    for f in report.finals:
        lines += _final(f)
        gain = report.gain(f)
        if gain is not None:
            lines += [f"Distillation gain over the baseline: {gain:+.2f} mAP50-95 points.", ""]
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines)


def _stage_times(report: AutoReport) -> list[str]:
    """Wall seconds per stage, this run and all runs."""
    lines = [
        "## Wall time per stage",
        "",
        "Seconds of this run, and in all runs of this output folder (a re-run "
        "reuses finished pieces, so its own times can be near zero).",
        "",
    ]
    total = report.stage_seconds_total
    lines += table(
        ["stage", "this run (s)", "all runs (s)"],
        [[k, v, total.get(k)] for k, v in report.stage_seconds.items()],
    )
    return lines


def _screen(report: AutoReport) -> list[str]:
    """How the latency screen measured, and every candidate's numbers."""
    s = report.settings
    lines = [
        "## Latency screen",
        "",
        f"Random weights, exported to ONNX, run through `runtime.pipeline.Detector` on "
        f"{s.get('frame', ['?', '?'])[0]}x{s.get('frame', ['?', '?'])[1]} frames at batch "
        f"{s.get('batch')}: {s.get('warmup')} warm-up calls, then {s.get('runs')} timed "
        "calls; p50/p99 of the end-to-end time per call (pre + infer + post), stage "
        "medians. `det/frame` is the median number of detections (post-processing "
        "cost grows with it; random weights give few).",
        "",
    ]
    rows = sorted(report.screen, key=lambda r: (r.flops, r.candidate.name))
    lines += table(
        [
            "candidate",
            "preset",
            "GFLOPs",
            "params M",
            "p50 ms",
            "p99 ms",
            "pre ms",
            "infer ms",
            "post ms",
            "det/frame",
            "meets budget",
            "frontier",
            "reused",
        ],
        [
            [
                r.candidate.name,
                r.preset or "",
                r.flops / 1e9,
                r.params / 1e6,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.latency.preprocess_ms,
                r.latency.infer_ms,
                r.latency.postprocess_ms,
                r.latency.detections_per_frame,
                "yes" if r.meets else "no: " + "; ".join(r.failures),
                r.on_frontier,
                r.reused,
            ]
            for r in rows
        ],
    )
    return lines


def _frontier(report: AutoReport) -> list[str]:
    """The candidates on the latency/FLOPs frontier."""
    metric = frontier_metric(report.budget)
    front = sorted((r for r in report.screen if r.on_frontier), key=lambda r: r.flops)
    lines = [
        f"### Frontier ({metric.replace('_ms', '')} latency vs FLOPs)",
        "",
        "The candidates no other candidate beats on both axes (faster *and* larger). "
        "![latency vs FLOPs](frontier.png)",
        "",
    ]
    lines += table(
        ["candidate", "GFLOPs", f"{metric.replace('_ms', '')} ms", "meets budget"],
        [[r.candidate.name, r.flops / 1e9, getattr(r.latency, metric), r.meets] for r in front],
    )
    return lines


def _teacher_screen(report: AutoReport) -> list[str]:
    """The teachers ranked by their proxy students."""
    lines = [
        "## Teacher screen",
        "",
        "Each teacher distilled the chosen student for the same short proxy run "
        "(same epochs, same labelled subset, same seed); ranked by the proxy "
        "student's mAP50-95 on the validation split.",
        "",
    ]
    lines += table(
        ["rank", "teacher", "proxy mAP50-95", "proxy mAP50", "method", "cost (s)", "reused"],
        [
            [t.rank, t.teacher, t.map50_95, t.map50, t.method, t.wall_s, t.reused]
            for t in report.teachers
        ],
    )
    return lines


def _teacher_reference(ref: TeacherReference) -> list[str]:
    """The chosen teacher's own latency and mAP."""
    lat = ref.latency
    lines = ["## Teacher reference", ""]
    lines += table(
        ["teacher", "p50 ms", "p99 ms", "mAP50-95", "notes"],
        [
            [
                ref.teacher,
                lat.p50_ms if lat else None,
                lat.p99_ms if lat else None,
                ref.map50_95,
                "; ".join(ref.notes),
            ]
        ],
    )
    return lines


def _teacher_check(check: dict[str, Any]) -> list[str]:
    """The teacher check: teacher and baseline side by side, and its verdict."""
    rows = [check["teacher"]] + ([check["reference"]] if check["reference"] else [])
    lines = ["## Teacher check", ""]
    lines += table(
        ["model", "mAP50-95", "file", "scored", "seconds"],
        [[r["role"], r["map50_95"], r["path"], r["how"], r["seconds"]] for r in rows],
    )
    return [*lines, check["message"], ""]


def _final(f: FinalResult) -> list[str]:
    """One final student: latency, mAP, step times and its budget gate."""
    lines = [
        f"## Final student {f.candidate}",
        "",
        f"Distilled from `{f.teacher}` ({f.method}); checkpoint `{f.checkpoint}`, "
        f"exported `{f.onnx}`.",
        "",
    ]
    lines += table(
        [
            "p50 ms",
            "p99 ms",
            "pre ms",
            "infer ms",
            "post ms",
            "mAP50-95 (onnx)",
            "mAP50 (onnx)",
            "mAP50-95 (checkpoint)",
        ],
        [
            [
                f.latency.p50_ms,
                f.latency.p99_ms,
                f.latency.preprocess_ms,
                f.latency.infer_ms,
                f.latency.postprocess_ms,
                f.map50_95,
                f.map50,
                f.checkpoint_map50_95,
            ]
        ],
    )
    lines += table(["step", "seconds"], [[k, v] for k, v in f.seconds.items()])
    lines += ["Budget gate (`runtime.budget.check_budget`):", ""]
    lines += table(
        ["check", "value", "limit", "passed", "note"],
        [[c.check, c.value, c.limit, c.passed, c.note] for c in f.gate],
    )
    return lines
