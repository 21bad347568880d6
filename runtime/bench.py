"""The release gate: student vs teacher on one backend and machine, against a budget.

Latency is end-to-end per frame (pre-processing + inference + post-processing, as served)
measured interleaved: rounds alternate student and teacher so both see the same machine
state (thermal throttling, background load) — the only fair way to quote a speed-up.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.budget import Budget, Check, check_budget, summarize
from runtime.files import save_figure, write_atomic, write_json_atomic
from runtime.measure import (
    machine,
    markdown_table,
    percentile,
    rss_mb,
    today,
)

log = logging.getLogger(__name__)


@dataclass
class ModelRun:
    """Measurements of one model: per-frame end-to-end latencies (ms) and optional mAP."""

    path: str
    backend: str = ""
    precision: str = ""
    input_size: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    infer_ms: list[float] = field(default_factory=list)
    memory_mb: float | None = None
    map50_95: float | None = None
    map50: float | None = None

    def stats(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "model": Path(self.path).name,
            "backend": self.backend,
            "precision": self.precision,
            "input": f"{self.input_size}x{self.input_size}",
            "p50_ms": round(percentile(lat, 50), 3) if lat else None,
            "p90_ms": round(percentile(lat, 90), 3) if lat else None,
            "p99_ms": round(percentile(lat, 99), 3) if lat else None,
            "infer_p50_ms": round(percentile(self.infer_ms, 50), 3) if self.infer_ms else None,
            "memory_mb": None if self.memory_mb is None else round(self.memory_mb, 1),
            "map50_95": self.map50_95,
            "map50": self.map50,
        }


def open_measured(path: str, backend: str | None, threads: int | None) -> tuple[Any, float | None]:
    """Open a runtime Detector, warm it up; returns it and the resident memory it added
    (MiB; None where memory cannot be read)."""
    from runtime.pipeline import Detector

    gc.collect()
    before = rss_mb()
    det = Detector(path, backend=backend, threads=threads)
    det.warmup(5)
    after = rss_mb()
    return det, None if before is None or after is None else max(0.0, after - before)


def interleaved_latency(
    detectors: Sequence[Any],
    frames: Sequence[np.ndarray],
    runs: int,
    rounds: int = 10,
    settle: int = 2,
    progress: bool = True,
) -> list[tuple[list[float], list[float]]]:
    """Per detector: (end-to-end ms per frame, inference ms per frame), ``runs`` frames each,
    measured in ``rounds`` alternating blocks. The first ``settle`` frames of each block are
    run but not recorded: the other model's thread pool may still be spinning right after
    its block, which would otherwise bill one model for the other's threads."""
    from tqdm import tqdm

    out: list[tuple[list[float], list[float]]] = [([], []) for _ in detectors]
    per_round = max(1, -(-runs // rounds))
    bar = tqdm(total=per_round * rounds * len(detectors), desc="latency", disable=not progress)
    k = 0
    for _ in range(rounds):
        for det, (lat, inf) in zip(detectors, out):
            for i in range(settle + per_round):
                frame = frames[k % len(frames)]
                k += 1
                t0 = time.perf_counter()
                _, timings = det.detect(frame)
                if i >= settle:
                    lat.append((time.perf_counter() - t0) * 1e3)
                    inf.append(timings.infer_ms)
                    bar.update()
    bar.close()
    return out


@dataclass
class GateResult:
    passed: bool
    checks: list[Check]
    student: ModelRun
    teacher: ModelRun | None
    summary: str
    reference: ModelRun | None = None  # the student trained alone (mAP only), for the gain

    @property
    def gain(self) -> float | None:
        """Distillation gain: student minus reference mAP50-95 points (None without both)."""
        s = self.student.map50_95
        r = self.reference.map50_95 if self.reference else None
        return None if s is None or r is None else round(s - r, 2)

    def gain_line(self) -> str | None:
        """The gain as one line of the report, or None without a reference."""
        if self.reference is None:
            return None
        if self.gain is None:
            return f"distillation gain: n/a (no mAP for {Path(self.reference.path).name})"
        return (
            f"distillation gain: {self.gain:+.2f} mAP50-95 points (student "
            f"{self.student.map50_95:.2f} vs reference {self.reference.map50_95:.2f}, "
            f"{Path(self.reference.path).name}, trained alone)"
        )


def evaluate_gate(
    budget: Budget,
    student: ModelRun,
    teacher: ModelRun | None,
    reference: ModelRun | None = None,
) -> GateResult:
    """Check ``budget`` on the measurements; ``reference`` (the student trained alone,
    with its mAP) adds the distillation gain, reported beside the lines, not gated."""
    s = student.stats()
    t = teacher.stats() if teacher else {}
    checks = check_budget(
        budget,
        student_p50_ms=s["p50_ms"],
        student_p99_ms=s["p99_ms"],
        teacher_p50_ms=t.get("p50_ms"),
        student_map=student.map50_95,
        teacher_map=teacher.map50_95 if teacher else None,
        student_memory_mb=student.memory_mb,
        input_size=student.input_size,
    )
    passed = all(c.passed for c in checks)
    return GateResult(passed, checks, student, teacher, summarize(checks), reference)


def side_by_side(result: GateResult) -> str:
    """A plain-text table comparing student and teacher, then the budget lines."""
    s = result.student.stats()
    t = result.teacher.stats() if result.teacher else {}
    keys = [
        "model",
        "backend",
        "precision",
        "input",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "infer_p50_ms",
        "memory_mb",
        "map50_95",
        "map50",
    ]
    lines = [f"{'':<14} {'student':>24} {'teacher':>24}"]
    for k in keys:
        lines.append(f"{k:<14} {_fmt(s.get(k)):>24} {_fmt(t.get(k)):>24}")
    lines.append("")
    for c in result.checks:
        op = {"max": "<=", "min": ">=", "eq": "=="}[c.kind]
        mark = "PASS" if c.passed else "FAIL"
        lines.append(f"{mark}  {c.check:<22} {_fmt(c.value):>10} {op} {c.limit:<10} {c.note}")
    lines.append(result.summary)
    if result.gain_line():
        lines.append(result.gain_line())
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def write_report(
    result: GateResult, out_dir: str | Path, command: str, budget: Budget
) -> list[Path]:
    """budget.json (format: benchmarks/README.md), budget.md and budget.png (with matplotlib)."""
    out = Path(out_dir)
    doc = {
        "command": command,
        "machine": machine(),
        "date": today(),
        "passed": result.passed,
        "summary": result.summary,
        "budget": budget.to_dict(),
        "student": result.student.stats(),
        "teacher": result.teacher.stats() if result.teacher else None,
        "rows": [c.row() for c in result.checks],
    }
    if result.reference is not None:
        ref = result.reference
        doc["reference"] = {
            "model": Path(ref.path).name,
            "path": ref.path,
            "map50_95": ref.map50_95,
            "map50": ref.map50,
        }
        doc["distillation_gain"] = result.gain
    paths = [write_json_atomic(out / "budget.json", doc)]
    models = [result.student.stats()] + ([result.teacher.stats()] if result.teacher else [])
    for m, role in zip(models, ("student", "teacher")):
        m["role"] = role
    cols = [
        ("role", "role"),
        ("model", "model"),
        ("backend", "backend"),
        ("precision", "prec."),
        ("input", "input"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("infer_p50_ms", "infer p50 ms"),
        ("memory_mb", "memory MB"),
        ("map50_95", "mAP50-95"),
        ("map50", "mAP50"),
    ]
    md = [
        f"# Budget gate ({doc['date']}): {'PASSED' if result.passed else 'FAILED'}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {doc['machine']}",
        "",
    ]
    md += [*markdown_table(models, cols), ""]
    md += markdown_table(
        doc["rows"],
        [
            ("check", "check"),
            ("value", "value"),
            ("limit", "limit"),
            ("passed", "passed"),
            ("note", "note"),
        ],
    )
    if result.gain_line():
        md += ["", result.gain_line()]
    paths.append(write_atomic(out / "budget.md", "\n".join(md) + "\n"))
    png = _plot(result, out / "budget.png")
    if png:
        paths.append(png)
    return paths


def _plot(result: GateResult, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed: no latency plot")
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    runs = [("student", result.student)] + ([("teacher", result.teacher)] if result.teacher else [])
    for name, run in runs:
        ax.hist(run.latencies_ms, bins=40, alpha=0.6, label=f"{name} ({Path(run.path).name})")
    for c in result.checks:
        if c.check in ("student_p50_ms", "student_p99_ms"):
            ax.axvline(c.limit, ls="--", color="k", lw=1)
            ax.text(
                c.limit,
                ax.get_ylim()[1] * 0.9,
                c.check.replace("student_", "budget "),
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
            )
    ax.set_xlabel("end-to-end latency per frame (ms)")
    ax.set_ylabel("frames")
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
