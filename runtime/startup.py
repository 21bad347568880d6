"""What a server measures about its model at start-up, and how it reports it.

After warm-up the server probes the model's latency (:func:`probe_latency`), checks the
``--budget`` file's lines that it can measure itself (:func:`check_startup_budget`) and
builds the ``GetModelInfo`` answer (:func:`model_info`).

Budget lines at start-up:
- ``student_p50_ms``, ``student_p99_ms``: the probe's median and p99 at the budget's
  ``latency.batch`` (batch 1: the pipeline's ``total_ms`` per frame; batch B > 1: the
  wall time of one ``detect_batch`` call of B frames). A batch the server cannot form
  (``--max-batch`` or the model's batch below B) fails these lines, saying so.
- ``input_size``: the model's larger input side against ``latency.input``.
- ``student_memory_mb``: the resident memory (Linux VmRSS) the process gained from
  before loading the model to after the probe, when the server loaded the model itself.
- ``speedup_vs_teacher``, ``accuracy_retention`` (and memory when not measured) are
  *deferred*: listed in the report as checked by ``understudy bench``, not failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

import runtime
from runtime.budget import Budget, Check, check_budget, summarize
from runtime.measure import rss_mb
from runtime.proto import pb
from runtime.scheduler import DetectorLike
from runtime.server_config import ServerConfig


def probe_latency(detector: DetectorLike, runs: int, batch: int = 1) -> tuple[float, float]:
    """Median and p99 ms of ``runs`` detections on a 640x480 test image: the pipeline's
    ``total_ms`` at batch 1, the wall time of one ``detect_batch`` call at ``batch`` > 1."""
    if runs <= 0:
        return 0.0, 0.0
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    if batch == 1:
        totals = [detector.detect(image)[1].total_ms for _ in range(runs)]
    else:
        totals = []
        for _ in range(runs):
            start = time.perf_counter()
            detector.detect_batch([image] * batch)
            totals.append((time.perf_counter() - start) * 1000.0)
    return float(np.percentile(totals, 50)), float(np.percentile(totals, 99))


@dataclass(frozen=True)
class StartupBudget:
    """The budget lines checked at start-up; ``deferred`` names the lines left to
    ``understudy bench``."""

    lines: tuple[Check, ...]
    deferred: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(line.passed for line in self.lines)

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(line.check for line in self.lines if not line.passed)

    def summary(self) -> str:
        """One line: ``budget met (...)`` or ``budget FAILED: <line> <value> > <limit>``,
        then the deferred lines."""
        text = summarize(list(self.lines)) if self.lines else "no budget line checkable at start-up"
        if self.deferred:
            text += f"; checked by `understudy bench`, not here: {', '.join(self.deferred)}"
        return text


def startup_budget(
    budget: Budget,
    *,
    p50_ms: float | None,
    p99_ms: float | None,
    input_size: int | None,
    memory_mb: float | None = None,
    latency_note: str = "",
) -> StartupBudget:
    """Check the lines of ``budget`` a server can measure (module docstring). None for a
    latency = not measured: its lines fail with ``latency_note``; None for the memory =
    not measured: the memory line is deferred."""
    limits = (
        ("speedup_vs_teacher", budget.min_speedup),
        ("accuracy_retention", budget.min_accuracy_retention),
        ("student_memory_mb", budget.max_memory_mb if memory_mb is None else None),
    )
    deferred = tuple(name for name, limit in limits if limit is not None)
    here = replace(
        budget,
        min_speedup=None,
        min_accuracy_retention=None,
        max_memory_mb=budget.max_memory_mb if memory_mb is not None else None,
    )
    lines = check_budget(
        here,
        student_p50_ms=p50_ms,
        student_p99_ms=p99_ms,
        student_memory_mb=memory_mb,
        input_size=input_size,
    )
    if latency_note:
        lines = [replace(c, note=latency_note) if c.value is None else c for c in lines]
    return StartupBudget(tuple(lines), deferred)


def check_startup_budget(
    detector: DetectorLike,
    budget: Budget,
    *,
    p50: float,
    p99: float,
    probe_runs: int,
    max_batch: int,
    rss_before: float | None,
) -> StartupBudget:
    """:func:`startup_budget` for a warm ``detector`` whose batch-1 probe gave ``p50`` and
    ``p99``; probes again at the budget's batch when it is > 1 and the server can form it
    (``max_batch``: the server's setting). ``rss_before``: :func:`rss_mb` before loading,
    or None when the model was loaded elsewhere."""
    batch = budget.latency.batch
    largest = max(1, min(max_batch, int(getattr(detector, "max_batch", 1) or 1)))
    lat: tuple[float | None, float | None] = (p50, p99) if probe_runs > 0 else (None, None)
    note = "" if probe_runs > 0 else "latency probe disabled (0 runs)"
    if batch > largest:
        lat = (None, None)
        note = (
            f"the budget's latency is at batch {batch}; this server forms batches of at most "
            f"{largest} (--max-batch, and the model's own limit)"
        )
    elif batch > 1 and probe_runs > 0:
        lat = probe_latency(detector, probe_runs, batch)
    rss_after = rss_mb()
    memory = None
    if rss_before is not None and rss_after is not None:
        memory = max(0.0, rss_after - rss_before)
    return startup_budget(
        budget,
        p50_ms=lat[0],
        p99_ms=lat[1],
        input_size=max(int(v) for v in detector.spec.input_size),
        memory_mb=memory,
        latency_note=note,
    )


def model_info(
    detector: DetectorLike,
    config: ServerConfig,
    max_batch: int,
    p50: float,
    p99: float,
    budget: StartupBudget | None = None,
) -> pb.ModelInfo:
    """The ``GetModelInfo`` answer (without the shadow report, added per call).
    ``budget_met``/``budget_report``: the start-up budget when there is one, else the
    probe's p99 against ``config.budget_ms``."""
    spec = detector.spec
    met = p99 <= config.budget_ms
    report = (
        f"student p99 {p99:.2f} ms {'<=' if met else '>'} budget {config.budget_ms:g} ms "
        f"(p50 {p50:.2f} ms, {config.latency_probe_runs} frames at 640x480 after warm-up)"
    )
    if budget is not None:
        met, report = budget.passed, f"{config.budget_source}: {budget.summary()}"
    info = pb.ModelInfo(
        class_names=list(spec.class_names),
        input_height=int(spec.input_size[0]),
        input_width=int(spec.input_size[1]),
        backend=str(detector.backend_name),
        precision=str(detector.precision),
        model_hash=str(spec.model_hash),
        student_latency_p50_ms=p50,
        student_latency_p99_ms=p99,
        default_budget_ms=config.budget_ms,
        budget_met=met,
        budget_report=report,
        max_batch=max_batch,
        preset=str(getattr(spec, "preset", "")),
        server_version=runtime.__version__,
        policy=config.policy,
    )
    teacher = config.teacher_latency_ms
    if teacher is None:
        teacher = (getattr(spec, "extra", None) or {}).get("teacher_latency_ms")
    if teacher:
        info.teacher_latency_ms = float(teacher)
    return info
