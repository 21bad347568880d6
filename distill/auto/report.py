"""The report of ``understudy auto``: ``report.json`` (every number), ``report.md`` (the
decision and its reasons, every table) and ``frontier.png`` (latency vs FLOPs), written
atomically into the output folder after each stage, so a partial run leaves a report too.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.auto.screen import LatencyResult, ScreenRow, frontier_metric
from distill.auto.store import write_json, write_text
from distill.auto.teacher_screen import TeacherScore
from runtime.budget import Budget, Check

STATUSES = ("running", "no_candidate", "screen_only", "gate_failed", "passed")


def machine_description(backend: str) -> str:
    """CPU model, cores and OS, plus the backend's version (and GPU for TensorRT).
    Raises BackendUnavailable for ``tensorrt`` where TensorRT or the GPU is missing."""
    from runtime.measure import machine

    host = machine().split(", onnxruntime")[0]
    if backend == "tensorrt":
        from runtime.engine.environment import build_environment

        trt, gpu, cc = build_environment()
        return f"{gpu} (sm {cc}), TensorRT {trt}; host {host}"
    import onnxruntime

    return f"{host}, onnxruntime {onnxruntime.__version__} (CPU)"


def screen_note(backend: str, machine: str) -> str:
    """Where the latency model holds: only on the backend and machine it was measured on."""
    if backend == "tensorrt":
        return (
            f"Latencies were measured with TensorRT on {machine}; they hold for this "
            "device, engine precision and batch only."
        )
    return (
        f"This is a CPU screen: latencies were measured with ONNX Runtime on {machine}. "
        "They hold for this machine only, not for a Jetson: re-run `understudy auto` on the "
        "Jetson with `--backend tensorrt` before trusting the choice there."
    )


@dataclass
class TeacherReference:
    """The chosen teacher's own numbers for the budget gate (None: not measured)."""

    teacher: str
    latency: LatencyResult | None = None
    map50_95: float | None = None
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class FinalResult:
    """One distilled, exported and measured student."""

    candidate: str
    teacher: str
    method: str
    checkpoint: str
    onnx: str
    latency: LatencyResult
    map50_95: float | None  # the exported model through the runtime pipeline
    map50: float | None = None
    checkpoint_map50_95: float | None = None  # the torch checkpoint (training's final eval)
    seconds: dict[str, float] = field(default_factory=dict)  # distill, export, measure, eval
    gate: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.gate) and all(c.passed for c in self.gate)


@dataclass
class AutoReport:
    """Everything ``understudy auto`` decided and measured."""

    command: str
    backend: str
    machine: str
    budget: Budget
    budget_file: str
    grid: dict[str, Any]
    settings: dict[str, Any]
    date: str = field(default_factory=lambda: datetime.date.today().isoformat())
    status: str = "running"
    message: str = ""
    screen: list[ScreenRow] = field(default_factory=list)
    chosen: list[str] = field(default_factory=list)
    teachers: list[TeacherScore] = field(default_factory=list)
    best_teacher: str = ""
    teacher_reference: TeacherReference | None = None
    finals: list[FinalResult] = field(default_factory=list)
    selected: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)  # this run
    stage_seconds_total: dict[str, float] = field(default_factory=dict)  # all runs in OUT
    notes: list[str] = field(default_factory=list)

    @property
    def note(self) -> str:
        return screen_note(self.backend, self.machine)

    def to_dict(self) -> dict[str, Any]:
        ref = self.teacher_reference
        return {
            "command": self.command,
            "machine": self.machine,
            "date": self.date,
            "backend": self.backend,
            "screen_note": self.note,
            "status": self.status,
            "message": self.message,
            "budget": self.budget.to_dict(),
            "budget_file": self.budget_file,
            "grid": self.grid,
            "settings": self.settings,
            "frontier_metric": frontier_metric(self.budget),
            "candidates": [r.to_dict() for r in self.screen],
            "frontier": [r.candidate.name for r in self.screen if r.on_frontier],
            "meeting_budget": [r.candidate.name for r in self.screen if r.meets],
            "chosen": self.chosen,
            "teachers": [t.to_dict() for t in self.teachers],
            "best_teacher": self.best_teacher,
            "teacher_reference": None
            if ref is None
            else {
                "teacher": ref.teacher,
                "map50_95": ref.map50_95,
                "notes": ref.notes,
                "latency": ref.latency.to_dict() if ref.latency else None,
                "seconds": ref.seconds,
            },
            "finals": [
                {
                    "candidate": f.candidate,
                    "teacher": f.teacher,
                    "method": f.method,
                    "checkpoint": f.checkpoint,
                    "onnx": f.onnx,
                    "latency": f.latency.to_dict(),
                    "map50_95": f.map50_95,
                    "map50": f.map50,
                    "checkpoint_map50_95": f.checkpoint_map50_95,
                    "seconds": f.seconds,
                    "gate": [c.row() for c in f.gate],
                    "passed": f.passed,
                }
                for f in self.finals
            ],
            "selected": self.selected,
            "stage_seconds": self.stage_seconds,
            "stage_seconds_total": self.stage_seconds_total,
            "notes": self.notes,
        }


def write_report(report: AutoReport, out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and (when anything was measured) frontier.png."""
    from distill.auto.report_md import markdown

    out = Path(out_dir)
    paths = {"json": write_json(out / "report.json", report.to_dict())}
    if report.screen:
        paths["png"] = plot_frontier(report, out / "frontier.png")
    paths["md"] = write_text(out / "report.md", markdown(report))
    return paths


def plot_frontier(report: AutoReport, path: str | Path) -> Path:
    """Latency (the frontier metric) vs GFLOPs of every candidate: filled markers meet
    the budget, the line joins the frontier, dashed lines are the budget's limits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = frontier_metric(report.budget)
    label = metric.replace("_ms", "")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    markers = "osD^v<>ph*"
    inputs = sorted({r.candidate.input for r in report.screen})
    for i, size in enumerate(inputs):
        rows = [r for r in report.screen if r.candidate.input == size]
        for meets in (True, False):
            sel = [r for r in rows if r.meets == meets]
            if sel:
                ax.scatter(
                    [r.flops / 1e9 for r in sel],
                    [getattr(r.latency, metric) for r in sel],
                    marker=markers[i % len(markers)],
                    facecolors="tab:green" if meets else "none",
                    edgecolors="tab:green" if meets else "tab:red",
                    label=f"{size}px {'meets' if meets else 'misses'} budget",
                )
    front = sorted((r for r in report.screen if r.on_frontier), key=lambda r: r.flops)
    ax.plot(
        [r.flops / 1e9 for r in front],
        [getattr(r.latency, metric) for r in front],
        color="0.4",
        lw=1,
        label="frontier",
    )
    for key, style in (("p50_ms", "--"), ("p99_ms", ":")):
        limit = getattr(report.budget.latency, key)
        if limit is not None:
            ax.axhline(limit, color="tab:blue", ls=style, lw=1, label=f"budget {key[:3]}")
    for r in report.screen:
        if r.candidate.name in report.chosen:
            xy = (r.flops / 1e9, getattr(r.latency, metric))
            ax.annotate(
                f"chosen: {r.candidate.name}",
                xy,
                textcoords="offset points",
                xytext=(-6, 8),
                ha="right",
                fontsize=8,
            )
    ax.set_xlabel("GFLOPs (2 x MACs, batch 1)")
    ax.set_ylabel(f"end-to-end {label} latency, ms (batch {report.budget.latency.batch})")
    ax.set_title(f"Latency screen on {report.backend}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
