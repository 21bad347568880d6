"""The soak benchmark's verdicts and files (used by ``benchmarks.soak`` only): per-stream
and per-session figures, the targets, ``soak.json``, ``soak.md`` and ``soak.png``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.stream_load import worker_view
from runtime.files import save_figure, write_atomic, write_json_atomic
from runtime.measure import machine, markdown_table, today

# the targets: (check, limit, "max" | "min")
TARGETS = (
    ("errors", 0, "max"),
    ("sessions_over_1s_without_answers", 0, "max"),
    ("fairness_ratio", 1.5, "max"),
    ("late_rate_server", 0.01, "max"),
    ("rss_growth_after_warmup", 0.05, "max"),
)


def _window_ratios(
    sessions: list[list[Any]], t0: float, elapsed: float, window: float
) -> list[float]:
    """Best / worst stream's answers in each full ``window`` seconds of the run."""
    ratios = []
    n = int(elapsed // window)
    for w in range(n):
        lo, hi = t0 + w * window, t0 + (w + 1) * window
        counts = [sum(lo <= t < hi for s in stream for t in s.answer_times) for stream in sessions]
        ratios.append(max(counts) / min(counts) if min(counts) > 0 else float("inf"))
    return ratios


def _streams(sessions: list[list[Any]], elapsed: float) -> list[dict]:
    out = []
    for k, stream in enumerate(sessions):
        answered = sum(s.answered for s in stream)
        dropped = sum(s.dropped for s in stream)
        out.append(
            {
                "stream": k,
                "sessions": len(stream),
                "sent": sum(s.sent for s in stream),
                "answered": answered,
                "delivered_fps": round(answered / elapsed, 2),
                "drop_rate": round(dropped / max(answered + dropped, 1), 4),
                "late_rate": round(sum(s.late for s in stream) / max(answered, 1), 4),
            }
        )
    return out


def _memory(samples: list[dict], warmup_s: float) -> dict:
    warm = [s for s in samples if s.get("t_s", 0) >= warmup_s and "rss_mb" in s]
    if not warm:
        return {"rss_mb_warm": None, "rss_mb_end": None, "rss_growth_after_warmup": None}
    end, start = warm[-1], warm[0]
    return {
        "rss_mb_start": samples[0].get("rss_mb"),
        "rss_mb_warm": start["rss_mb"],
        "rss_mb_end": end["rss_mb"],
        "rss_mb_max_after_warmup": max(s["rss_mb"] for s in warm),
        "rss_growth_after_warmup": round((end["rss_mb"] - start["rss_mb"]) / start["rss_mb"], 4),
        "threads_warm": start["threads"],
        "threads_end": end["threads"],
        "threads_max": max(s["threads"] for s in warm),
        "fds_warm": start["fds"],
        "fds_end": end["fds"],
        "fds_max": max(s["fds"] for s in warm),
    }


def summarize(raw: dict, args: argparse.Namespace, warmup_s: float, window_s: float) -> dict:
    """One row: settings, totals, per-stream view, memory, and the targets checked."""
    sessions = raw["sessions"]
    flat = [s for stream in sessions for s in stream]
    elapsed = raw["elapsed_s"]
    answered = sum(s.answered for s in flat)
    streams = _streams(sessions, elapsed)
    fps = [s["delivered_fps"] for s in streams]
    windows = _window_ratios(sessions, raw["t0"], elapsed, window_s)
    long_sessions = [s for s in flat if s.end - s.start > 1.0]
    errors = sum(len(s.errors) + s.frame_errors for s in flat) + (raw["server_exit_code"] != 0)
    errors += raw["health_end"] != "SERVING"
    row = {
        "streams": args.streams,
        "fps_per_stream": round(raw["fps_per_stream"], 2),
        "budget_ms": args.budget_ms,
        "duration_s": args.duration,
        "elapsed_s": round(elapsed, 1),
        "session_s": args.session_s,
        "model": args.model.name,
        "model_p50_ms": round(raw["model_p50_ms"], 2),
        "overload_factor": round(args.streams * raw["fps_per_stream"] / raw["capacity_fps"], 2),
        "sessions": len(flat),
        "sent": sum(s.sent for s in flat),
        "answered": answered,
        "dropped": sum(s.dropped for s in flat),
        "errors": errors,
        "error_samples": [e for s in flat for e in s.errors][:5],
        "health_end": raw["health_end"],
        "server_exit_code": raw["server_exit_code"],
        **worker_view(raw.get("worker"), raw["elapsed_s"]),
        "sessions_over_1s_without_answers": sum(s.answered == 0 for s in long_sessions),
        "session_fps_p5": _pct([s.answered / (s.end - s.start) for s in long_sessions], 5),
        "fairness_ratio": round(max(fps) / min(fps), 3) if min(fps) > 0 else None,
        "window_fairness_ratio_median": _pct(windows, 50),
        "window_fairness_ratio_max": round(max(windows), 3) if windows else None,
        "late_rate_server": round(sum(s.late for s in flat) / max(answered, 1), 4),
        "late_rate_e2e": round(sum(s.late_e2e for s in flat) / max(answered, 1), 4),
        "warmup_s": warmup_s,
        **_memory(raw["samples"], warmup_s),
        "per_stream": streams,
        "load_avg_start": raw["load_avg_start"],
        "load_avg_end": raw["load_avg_end"],
        "server_options": {
            k: getattr(args, k) for k in ("threads", "schedule", "service_quantile")
        },
    }
    row["targets"] = [_check(row, *t) for t in TARGETS]
    return row


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 3)


def _check(row: dict, check: str, limit: float, kind: str) -> dict:
    value = row.get(check)
    passed = value is not None and (value <= limit if kind == "max" else value >= limit)
    return {"check": check, "value": value, "limit": limit, "passed": bool(passed)}


def write_results(out_dir: Path, name: str, command: str, row: dict, samples: list[dict]) -> Path:
    """``NAME.json`` (with the /proc samples), ``NAME.md`` and ``NAME.png``."""
    doc = {
        "command": command,
        "machine": machine(),
        "date": today(),
        "rows": [row],
        "samples": samples,
    }
    path = write_json_atomic(out_dir / f"{name}.json", doc)
    keys = ("overload_factor", "fps_per_stream", "sessions", "sent", "answered", "dropped")
    lines = [
        f"# Soak ({doc['date']})",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {doc['machine']}; load average (1, 5, 15 min) at start "
        f"{_loads(row['load_avg_start'])}, at end {_loads(row['load_avg_end'])}",
        "",
        f"{row['streams']} streams, {row['elapsed_s']:g} s, sessions of {row['session_s']:g} s "
        f"each on a new channel; model p50 {row['model_p50_ms']} ms at start-up; budget "
        f"{row['budget_ms']:g} ms. "
        + ", ".join(f"{k.replace('_', ' ')} {row[k]}" for k in keys)
        + ".",
        "",
        *markdown_table(
            row["targets"],
            [("check", "target"), ("value", "value"), ("limit", "limit"), ("passed", "met")],
        ),
        "",
        *markdown_table(
            row["per_stream"],
            [
                ("stream", "stream"),
                ("sessions", "sessions"),
                ("sent", "sent"),
                ("answered", "answered"),
                ("delivered_fps", "delivered fps"),
                ("drop_rate", "drop rate"),
                ("late_rate", "late (server clock)"),
            ],
        ),
        "",
        f"Per 10 s window, best / worst stream: median {row['window_fairness_ratio_median']}, "
        f"max {row['window_fairness_ratio_max']}. Sessions over 1 s: 5th percentile of delivered "
        f"FPS {row['session_fps_p5']}. Late end to end (client clock): {row['late_rate_e2e']}. "
        f"Model worker busy {row.get('model_busy')} of the run, waits for a stream behind "
        f"{row.get('holds')} ({row.get('held_s')} s).",
        "",
        f"Server after warm-up ({row['warmup_s']:g} s): RSS {row.get('rss_mb_warm')} -> "
        f"{row.get('rss_mb_end')} MiB (max {row.get('rss_mb_max_after_warmup')}), threads "
        f"{row.get('threads_warm')} -> {row.get('threads_end')} (max {row.get('threads_max')}), "
        f"fds {row.get('fds_warm')} -> {row.get('fds_end')} (max {row.get('fds_max')}); "
        f"health at the end {row['health_end']}, exit status {row['server_exit_code']}.",
    ]
    write_atomic(path.with_suffix(".md"), "\n".join(lines) + "\n")
    _plot(samples, row, path.with_suffix(".png"))
    return path


def _loads(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def _plot(samples: list[dict], row: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [s for s in samples if "rss_mb" in s]
    t = [s["t_s"] for s in good]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True)
    ax.plot(t, [s["rss_mb"] for s in good], lw=1)
    ax.axvline(row["warmup_s"], ls="--", color="k", lw=1)
    ax.set_ylabel("server RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax2.plot(t, [s["threads"] for s in good], lw=1, label="threads")
    ax2.plot(t, [s["fds"] for s in good], lw=1, label="open fds")
    ax2.set_ylabel("count")
    ax2.set_xlabel("seconds")
    ax2.legend(fontsize=8)
    fig.suptitle(
        f"{row['streams']} streams x {row['fps_per_stream']} FPS, "
        f"a new session every {row['session_s']:g} s",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
