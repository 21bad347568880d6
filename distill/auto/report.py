"""The report of ``understudy auto``: what it decided and measured (:class:`AutoReport`,
and its JSON form). :mod:`distill.auto.report_md` renders it as Markdown and
:mod:`distill.auto.report_files` writes it out.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from distill.auto.screen import LatencyResult, ScreenRow, frontier_metric
from distill.auto.teacher_screen import TeacherScore
from runtime.budget import Budget, Check

STATUSES = (
    "running",
    "no_candidate",
    "screen_only",
    "teacher_not_ahead",
    "gate_failed",
    "passed",
)


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
    teacher_check: dict[str, Any] | None = None  # distill.teacher_check.TeacherCheck.to_dict()
    finals: list[FinalResult] = field(default_factory=list)
    selected: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)  # this run
    stage_seconds_total: dict[str, float] = field(default_factory=dict)  # all runs in OUT
    notes: list[str] = field(default_factory=list)

    def gain(self, final: FinalResult) -> float | None:
        """A final student's mAP50-95 minus the teacher check's baseline (points; None
        without a baseline or a score)."""
        ref = (self.teacher_check or {}).get("reference")
        if ref is None or final.map50_95 is None:
            return None
        return round(final.map50_95 - ref["map50_95"], 2)

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
            "teacher_check": self.teacher_check,
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
                    "gain_over_baseline": self.gain(f),
                }
                for f in self.finals
            ],
            "selected": self.selected,
            "stage_seconds": self.stage_seconds,
            "stage_seconds_total": self.stage_seconds_total,
            "notes": self.notes,
        }
