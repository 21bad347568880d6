"""The scheduler's orders measured against each other, in simulation (deterministic).

    python -m benchmarks.schedules [--cases 100] [--seconds 3] [--streams 4] [--fps 30]
        [--model-ms 8 12.5 20] [--decode-ms 0 2.5]

For every decode time, every model time and every order (``deficit``, ``edf``, ``arrival``; see
``runtime/scheduler.py``) the same ``--cases`` seeded cases run through the real
scheduler on a fake clock (``benchmarks/schedule_sim.py``): ``--streams`` open-loop
cameras at ``--fps`` with random phases, each model call taking the model time times a
random factor in [1, 1.3]; each frame reaches the scheduler the decode time after its
receipt (where its budget starts), as in the server. Nothing is timed on this machine: the
figures depend only on the arguments. Per row: the best / worst stream's answers (median,
90th percentile and worst case over the cases), streams without a single answer in a case,
answers in all, answers over the budget, and the shares of time the model ran and the
worker waited for a stream behind.

Writes ``benchmarks/results/schedules.json`` (format: ``benchmarks/README.md``) and
``schedules.md``.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from benchmarks.common import command_line
from benchmarks.schedule_sim import Camera, simulate
from runtime.files import write_atomic, write_json_atomic
from runtime.measure import machine, markdown_table, today
from runtime.server_config import SCHEDULES

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = [
    ("decode_ms", "decode ms"),
    ("model_ms", "model ms"),
    ("overload", "offered / capacity"),
    ("schedule", "schedule"),
    ("ratio_median", "best/worst median"),
    ("ratio_p90", "best/worst p90"),
    ("ratio_max", "best/worst max"),
    ("starved_streams", "streams with no answer"),
    ("answered", "answered"),
    ("late", "late"),
    ("model_busy", "model busy"),
    ("held", "held"),
]


def run_row(
    args: argparse.Namespace, model_ms: float, schedule: str, decode_ms: float = 0.0
) -> dict:
    """One order at one model time (frames reaching the scheduler ``decode_ms`` after their
    receipt) over the seeded cases."""
    rng = random.Random(args.seed)
    ratios, starved, answered, late, busy, held = [], 0, 0, 0, 0.0, 0.0
    stats: dict = {}
    for _ in range(args.cases):
        cams = [Camera(args.fps, offset=rng.random() / args.fps) for _ in range(args.streams)]
        times = [model_ms / 1000.0 * (1.0 + 0.3 * rng.random()) for _ in range(1024)]
        tallies = simulate(
            cams,
            args.seconds,
            lambda i, t=times: t[i % 1024],
            args.budget_ms,
            decode_s=decode_ms / 1000.0,
            schedule=schedule,
            stats=stats,
        )
        busy += stats["busy_s"]
        held += stats["held_s"]
        counts = [t.answered for t in tallies]
        starved += counts.count(0)
        ratios.append(max(counts) / max(min(counts), 1))
        answered += sum(counts)
        late += sum(t.late for t in tallies)
    ratios.sort()
    return {
        "schedule": schedule,
        "model_ms": model_ms,
        "decode_ms": decode_ms,
        "overload": round(args.streams * args.fps * model_ms * 1.15 / 1000.0, 2),
        "streams": args.streams,
        "fps_per_stream": args.fps,
        "budget_ms": args.budget_ms,
        "cases": args.cases,
        "seconds": args.seconds,
        "ratio_median": round(ratios[len(ratios) // 2], 3),
        "ratio_p90": round(ratios[int(0.9 * len(ratios))], 3),
        "ratio_max": round(ratios[-1], 3),
        "starved_streams": starved,
        "answered": answered,
        "late": late,
        "model_busy": round(busy / (args.cases * args.seconds), 3),
        "held": round(held / (args.cases * args.seconds), 3),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.schedules", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--cases", type=int, default=100)
    p.add_argument("--seconds", type=float, default=3.0, help="simulated seconds per case")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--budget-ms", type=float, default=33.0)
    p.add_argument("--model-ms", type=float, nargs="+", default=[8.0, 12.5, 20.0])
    p.add_argument(
        "--decode-ms",
        type=float,
        nargs="+",
        default=[0.0, 2.5],
        help="how long after its receipt (where its budget starts) a frame reaches the "
        "scheduler: the server decodes it meanwhile",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = [
        run_row(args, ms, s, dec)
        for dec in args.decode_ms
        for ms in args.model_ms
        for s in SCHEDULES
    ]
    command = command_line("schedules", argv)
    doc = {"command": command, "machine": machine(), "date": today(), "rows": rows}
    path = write_json_atomic(args.out_dir / "schedules.json", doc)
    lines = [
        f"# Scheduler orders in simulation ({doc['date']})",
        "",
        f"Command: `{command}`",
        "",
        f"{args.streams} open-loop streams at {args.fps:g} FPS, random phases, budget "
        f"{args.budget_ms:g} ms, {args.cases} seeded cases of {args.seconds:g} s per row; each "
        "model call takes the model time x U(1, 1.3) (offered / capacity uses the mean); a "
        "frame reaches the scheduler `decode ms` after its receipt, where its budget starts. "
        "Model busy and held: shares of the simulated time the model ran and the worker "
        "waited for a stream behind. Deterministic: the fake clock, not this machine, sets "
        "the times.",
        "",
        *markdown_table(rows, COLUMNS),
    ]
    write_atomic(path.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
