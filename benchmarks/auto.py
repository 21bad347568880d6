"""`understudy auto` on the standard synth benchmark.

    python -m benchmarks.auto                        # data/synth, runs/bench/teacher/model.pt

1. Budget: ``understudy auto`` first runs its latency screen alone (no teacher, an open
   budget) over the grid at the benchmark input (256; ``--pin-input``) on ONNX Runtime on
   this CPU. The budget's p50 line is the geometric mean of the screened p50 of the
   `nano` and `small` grid points, so nano meets it and small does not *by the same
   measurements the choice is made from* (measuring them separately first let a noisy
   minute on a shared machine swap them). Written to ``OUT/budget.yaml`` and
   ``OUT/calibration.json`` (a resumed run reuses both unless ``--recalibrate``).
2. ``understudy auto`` runs on that budget with the teacher(s) and the distillation config
   of the hand-picked students (``configs/bench_distill.yaml``, else ``bench_student.yaml``).
3. The chosen student's latency, mAP50-95 and the wall time of each stage are written to
   ``benchmarks/results/auto.json`` (+ ``auto.md``), next to the hand-picked hybrid nano of
   the distillation benchmark (``benchmarks/results/accuracy.json``, rows model "hybrid",
   size "nano", fp32, all labels): the auto student should score at least the lowest of
   its seeds (i.e. at least the hand-picked nano, within its seed spread).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

from benchmarks.common import command_line
from runtime.files import write_atomic, write_json_atomic
from runtime.measure import today

RESULTS = Path(__file__).resolve().parent / "results" / "auto.json"
ACCURACY = Path(__file__).resolve().parent / "results" / "accuracy.json"


def calibrate_budget(args: argparse.Namespace, out: Path) -> dict:
    """Run the latency screen alone (open budget, no teacher) and derive the budget from
    its nano and small rows: {"nano": row, "small": row, "p50_ms": geometric mean}."""
    from distill.models.presets import PRESETS

    open_budget = out / "open_budget.yaml"
    pin = f"  input: {args.size}\n" if args.pin_input else ""
    write_atomic(open_budget, f"latency:\n  p50_ms: 1000000\n  batch: 1\n{pin}")
    cmd = [
        sys.executable,
        "-m",
        "runtime.cli",
        "auto",
        "--data",
        args.data,
        "--budget",
        str(open_budget),
        "--backend",
        "onnxruntime",
        "--grid",
        args.grid,
        "--out",
        str(out / "run"),
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print("screen:", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=False)
    report = json.loads((out / "run" / "report.json").read_text())
    rows = {}
    for preset in ("nano", "small"):
        s = PRESETS[preset]
        point = (s.width, s.depth, args.size)
        match = [c for c in report["candidates"] if (c["width"], c["depth"], c["input"]) == point]
        if not match:
            raise SystemExit(f"the screen has no {preset} point at {args.size} px: check --grid")
        c = match[0]
        rows[preset] = {
            "candidate": c["name"],
            "p50_ms": c["p50_ms"],
            "p99_ms": c["p99_ms"],
            "input": args.size,
        }
        print(f"calibration: {preset} ({c['name']}) screened p50 {c['p50_ms']:.2f} ms")
    p50 = round(math.sqrt(rows["nano"]["p50_ms"] * rows["small"]["p50_ms"]), 2)
    if not rows["nano"]["p50_ms"] < p50 < rows["small"]["p50_ms"]:
        raise SystemExit(f"nano and small are not separable on this machine now: {rows}")
    return {**rows, "p50_ms": p50}


def hand_picked_nano() -> dict | None:
    """The distillation benchmark's hybrid nano (fp32, all labels): mean/min/max over seeds."""
    if not ACCURACY.is_file():
        return None
    rows = [
        r
        for r in json.loads(ACCURACY.read_text()).get("rows", [])
        if r.get("model") == "hybrid"
        and r.get("size") == "nano"
        and r.get("precision", "fp32") == "fp32"
        and float(r.get("labelled_fraction", 1.0)) == 1.0
    ]
    if not rows:
        return None
    maps = [float(r["map50_95"]) for r in rows]
    return {
        "mean": round(sum(maps) / len(maps), 2),
        "min": min(maps),
        "max": max(maps),
        "seeds": sorted(r.get("seed") for r in rows),
    }


def build_rows(report: dict, ref: dict | None, calibration: dict) -> list[dict]:
    cands = {c["name"]: c for c in report["candidates"]}
    total = report.get("stage_seconds_total") or report.get("stage_seconds", {})
    rows = []
    for f in report["finals"]:
        c = cands[f["candidate"]]
        row = {
            "model": "auto",
            "candidate": f["candidate"],
            "preset": c["preset"],
            "width": c["width"],
            "depth": c["depth"],
            "input": f"{c['input']}x{c['input']}",
            "gflops": c["gflops"],
            "params_m": c["params_m"],
            "teacher": f["teacher"],
            "method": f["method"],
            "backend": report["backend"],
            "batch": f["latency"]["batch"],
            "budget_p50_ms": calibration["p50_ms"],
            "screen_p50_ms": c["p50_ms"],
            "p50_ms": round(f["latency"]["p50_ms"], 3),
            "p99_ms": round(f["latency"]["p99_ms"], 3),
            "map50_95": f["map50_95"],
            "map50": f["map50"],
            "checkpoint_map50_95": f["checkpoint_map50_95"],
            "gate_passed": f["passed"],
            "selected": f["candidate"] == report["selected"],
            "train_seconds": f["seconds"].get("distill (training, as recorded)"),
            "stage_seconds": total,
            "hand_picked_nano_map50_95": ref,
            "at_least_hand_picked": (
                None if ref is None or f["map50_95"] is None else f["map50_95"] >= ref["min"]
            ),
        }
        rows.append(row)
    return rows


def write_markdown(doc: dict, path: Path) -> None:
    lines = [
        f"# understudy auto ({doc['date']})",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {doc['machine']}",
        "",
        f"Budget: p50 <= {doc['budget_p50_ms']} ms at batch 1 (geometric mean of the screened "
        f"random-weight nano {doc['calibration']['nano']['p50_ms']} ms and small "
        f"{doc['calibration']['small']['p50_ms']} ms at {doc['calibration']['nano']['input']}"
        f" px). Status of the run: **{doc['status']}**. Full report: `{doc['report']}`.",
        "",
        "| candidate | preset | GFLOPs | input | teacher | p50 ms | p99 ms | mAP50-95 | "
        "hand-picked nano mAP50-95 (min-max) | >= hand-picked | gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        ref = r["hand_picked_nano_map50_95"]
        ref_s = "n/a" if ref is None else f"{ref['mean']} ({ref['min']}-{ref['max']})"
        lines.append(
            f"| {r['candidate']} | {r['preset'] or ''} | {r['gflops']} | {r['input']} | "
            f"{Path(r['teacher']).name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['map50_95']} | {ref_s} | {r['at_least_hand_picked']} | "
            f"{'passed' if r['gate_passed'] else 'FAILED'} |"
        )
    lines += [
        "",
        "Wall time per stage (seconds, all runs of the output folder):",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in doc["stage_seconds"].items()]
    write_atomic(path, "\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.auto", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--data", default="data/synth")
    p.add_argument("--teachers", nargs="+", default=["runs/bench/teacher/model.pt"])
    p.add_argument(
        "--unlabelled",
        default=None,
        help="unlabelled frames for the distillation (default none: the same data as the "
        "hand-picked hybrid nano it is compared with)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="default: configs/bench_distill.yaml if present, else configs/bench_student.yaml",
    )
    p.add_argument("--grid", default="configs/auto_grid.yaml")
    p.add_argument("--size", type=int, default=256, help="input of the budget's calibration")
    p.add_argument(
        "--pin-input",
        action="store_true",
        help="add latency.input = --size to the budget (screen only that input)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--recalibrate",
        action="store_true",
        help="measure nano and small again (default: reuse OUT/calibration.json when present)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench/auto"))
    p.add_argument("--results", type=Path, default=RESULTS)
    return p


def write_budget(args: argparse.Namespace) -> tuple[Path, dict]:
    """``OUT/budget.yaml`` from the calibration (``OUT/calibration.json``, measured unless
    a resumed run has one and ``--recalibrate`` is not given): (its path, calibration)."""
    cal_path = args.out / "calibration.json"
    if cal_path.is_file() and not args.recalibrate:  # a resumed run keeps its budget
        calibration = json.loads(cal_path.read_text())
        print(f"budget calibration from {cal_path}: p50 {calibration['p50_ms']} ms")
    else:
        calibration = calibrate_budget(args, args.out)
        write_json_atomic(cal_path, calibration)
    pin = f"  input: {args.size}\n" if args.pin_input else ""
    budget = write_atomic(
        args.out / "budget.yaml", f"latency:\n  p50_ms: {calibration['p50_ms']}\n  batch: 1\n{pin}"
    )
    return budget, calibration


def auto_command(args: argparse.Namespace, budget: Path) -> list[str]:
    """``understudy auto`` on ``budget`` with the teachers and the benchmark's config."""
    config = args.config or next(
        c for c in ("configs/bench_distill.yaml", "configs/bench_student.yaml") if Path(c).is_file()
    )
    cmd = [sys.executable, "-m", "runtime.cli", "auto", "--data", args.data]
    cmd += ["--budget", str(budget), "--backend", "onnxruntime", "--teachers", *args.teachers]
    cmd += ["--config", config, "--grid", args.grid, "--out", str(args.out / "run")]
    if args.unlabelled:
        cmd += ["--unlabelled", args.unlabelled]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def results_doc(
    args: argparse.Namespace, argv: list[str] | None, report: dict, calibration: dict, code: int
) -> dict:
    """The auto.json document of a finished ``understudy auto`` run."""
    from distill.auto.report import machine_description

    return {
        "command": command_line("auto", argv),
        "machine": machine_description("onnxruntime"),
        "date": today(),
        "auto_command": report["command"],
        "exit_code": code,
        "status": report["status"],
        "budget_p50_ms": calibration["p50_ms"],
        "calibration": calibration,
        "report": str(args.out / "run" / "report.md"),
        "stage_seconds": report.get("stage_seconds_total") or report["stage_seconds"],
        "screen": report["candidates"],
        "teachers": report["teachers"],
        "rows": build_rows(report, hand_picked_nano(), calibration),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    budget, calibration = write_budget(args)
    cmd = auto_command(args, budget)
    print("running:", shlex.join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    report_path = args.out / "run" / "report.json"
    if not report_path.is_file():
        print(f"understudy auto wrote no report (exit code {code}); nothing recorded")
        return code or 1
    report = json.loads(report_path.read_text())
    doc = results_doc(args, argv, report, calibration, code)
    write_json_atomic(args.results, doc)
    write_markdown(doc, args.results.with_suffix(".md"))
    print(f"wrote {args.results} and {args.results.with_suffix('.md')} (auto exit code {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
