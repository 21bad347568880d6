"""Latency/accuracy budgets: the release gate's schema and its checks (torch-free, so an
edge engineer runs it on the Jetson).

Budget file (YAML; every key optional except that at least one check must be set)::

    latency:              # student end-to-end latency per frame (pre + infer + post)
      p50_ms: 15.0
      p99_ms: 33.0
      batch: 1            # batch size the latency is measured at
      input: 320          # network input side the numbers refer to (informational check)
    min_speedup: 5.0      # teacher p50 / student p50, same backend and machine
    min_accuracy_retention: 0.90   # student mAP50-95 / teacher mAP50-95 (needs --data)
    max_memory_mb: 300    # resident memory the student's backend adds when loaded

Unknown keys are a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runtime.errors import ConfigError

TOP_KEYS = ("latency", "min_speedup", "min_accuracy_retention", "max_memory_mb")
LATENCY_KEYS = ("p50_ms", "p99_ms", "batch", "input")


@dataclass(frozen=True)
class LatencyBudget:
    p50_ms: float | None = None
    p99_ms: float | None = None
    batch: int = 1
    input: int | None = None


@dataclass(frozen=True)
class Budget:
    latency: LatencyBudget = field(default_factory=LatencyBudget)
    min_speedup: float | None = None
    min_accuracy_retention: float | None = None
    max_memory_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any, key: str, source: str, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{source}: {key} must be > 0, got {value!r}")
    return float(value)


def parse_budget(data: Any, source: str = "budget") -> Budget:
    """Validate a budget mapping (see the module docstring)."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source}: a budget is a mapping with at least one of {TOP_KEYS}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r}; valid keys: {', '.join(TOP_KEYS)}"
        )
    lat = data.get("latency") or {}
    if not isinstance(lat, dict):
        raise ConfigError(f"{source}: latency must be a mapping of {LATENCY_KEYS}")
    unknown = sorted(set(lat) - set(LATENCY_KEYS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key 'latency.{unknown[0]}'; valid keys: {', '.join(LATENCY_KEYS)}"
        )
    latency = LatencyBudget(
        p50_ms=_number(lat["p50_ms"], "latency.p50_ms", source) if "p50_ms" in lat else None,
        p99_ms=_number(lat["p99_ms"], "latency.p99_ms", source) if "p99_ms" in lat else None,
        batch=int(_number(lat.get("batch", 1), "latency.batch", source)),
        input=int(_number(lat["input"], "latency.input", source)) if "input" in lat else None,
    )
    opt = {
        k: _number(data[k], k, source) if data.get(k) is not None else None for k in TOP_KEYS[1:]
    }
    return Budget(latency, **opt)


def load_budget(path: str | Path) -> Budget:
    """Read and validate a budget YAML file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ConfigError(f"{p}: cannot read budget ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from e
    return parse_budget(data, str(p))


@dataclass(frozen=True)
class Check:
    """One budget line: ``value`` against ``limit`` (``kind`` "max" or "min")."""

    check: str
    value: float | None
    limit: float
    kind: str
    passed: bool
    note: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "value": self.value,
            "limit": self.limit,
            "passed": self.passed,
            "note": self.note,
        }


def _line(name: str, value: float | None, limit: float, kind: str, missing: str) -> Check:
    if value is None:
        return Check(name, None, limit, kind, False, missing)
    ok = value <= limit if kind == "max" else value >= limit
    return Check(name, round(value, 4), limit, kind, ok)


def check_budget(
    budget: Budget,
    *,
    student_p50_ms: float | None = None,
    student_p99_ms: float | None = None,
    teacher_p50_ms: float | None = None,
    student_map: float | None = None,
    teacher_map: float | None = None,
    student_memory_mb: float | None = None,
    input_size: int | None = None,
) -> list[Check]:
    """Every line of ``budget`` against the measurements; a missing measurement fails its
    line with a note saying what to provide."""
    lines = []
    lat = budget.latency
    if lat.input is not None and input_size is not None:
        lines.append(
            Check(
                "input_size",
                float(input_size),
                float(lat.input),
                "eq",
                input_size == lat.input,
                "latency budget refers to this input size",
            )
        )
    if lat.p50_ms is not None:
        lines.append(_line("student_p50_ms", student_p50_ms, lat.p50_ms, "max", "no latency run"))
    if lat.p99_ms is not None:
        lines.append(_line("student_p99_ms", student_p99_ms, lat.p99_ms, "max", "no latency run"))
    if budget.min_speedup is not None:
        speedup = teacher_p50_ms / student_p50_ms if teacher_p50_ms and student_p50_ms else None
        lines.append(
            _line(
                "speedup_vs_teacher",
                speedup,
                budget.min_speedup,
                "min",
                "needs a teacher (--teacher)",
            )
        )
    if budget.min_accuracy_retention is not None:
        retention = student_map / teacher_map if student_map is not None and teacher_map else None
        why = "teacher mAP is 0" if teacher_map == 0 else "needs --data and a teacher"
        lines.append(
            _line("accuracy_retention", retention, budget.min_accuracy_retention, "min", why)
        )
    if budget.max_memory_mb is not None:
        lines.append(
            _line(
                "student_memory_mb",
                student_memory_mb,
                budget.max_memory_mb,
                "max",
                "memory not measured",
            )
        )
    return lines


def summarize(lines: list[Check]) -> str:
    """One line: 'budget met' or the failing checks with value vs limit."""
    failed = [c for c in lines if not c.passed]
    if not failed:
        return "budget met (" + ", ".join(f"{c.check} {c.value} vs {c.limit}" for c in lines) + ")"
    return "budget FAILED: " + "; ".join(
        f"{c.check} {c.value if c.value is not None else 'n/a'} "
        f"{'>' if c.kind == 'max' else '<' if c.kind == 'min' else '!='} {c.limit}"
        + (f" ({c.note})" if c.note and c.value is None else "")
        for c in failed
    )
