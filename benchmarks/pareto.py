"""The accuracy-latency picture a user decides from: mAP50-95 against ONNX Runtime latency.

    python -m benchmarks.pareto [--size 320] [--runs 200] [--warmup 20] [--threads N]

Accuracy comes from ``benchmarks/results/accuracy.json`` (the standard synth benchmark,
all labels, the benchmark's recipe; the mean over the seeds that ran): the teacher
(``large``), the scratch and distilled (``hybrid``) students of every size there, and the
peer (``peer-yolo11n``, ``benchmarks/peer.py``). Latency is measured here, in one run for
all of them on this machine: ONNX Runtime, batch 1, ``--size`` x ``--size``, the
project's pre- and post-processing included (``benchmarks.latency.measure``). Latency
does not depend on the weights, so each architecture is timed as a random-weight export
of its preset (the peer: its trained ONNX when ``benchmarks/peer.py`` has made one, else
Ultralytics' random-weight YOLO11n from its side env). A point is on the frontier when no
other point is both faster (p50) and more accurate.

Writes ``benchmarks/results/pareto.json`` (format: ``benchmarks/README.md``), ``pareto.md``
(the table, and which points are missing and why) and ``pareto.png``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from benchmarks.accuracy_results import load_results
from benchmarks.common import command_line
from benchmarks.latency import measure
from benchmarks.peer import LATENCY_ONNX as PEER_ONNX
from benchmarks.peer import NAME as PEER_NAME
from benchmarks.peer import export_reference
from runtime.files import save_figure, write_atomic, write_json_atomic
from runtime.measure import machine, markdown_table, synthetic_frames, today
from runtime.pipeline import Detector

RESULTS = Path(__file__).resolve().parent / "results"
ACCURACY = RESULTS / "accuracy.json"
# an accuracy row's model -> its point's name (students add their size: "distilled nano")
KINDS = {"teacher": "teacher", "scratch": "scratch", "hybrid": "distilled"}
COLUMNS = [
    ("point", "point"),
    ("architecture", "architecture"),
    ("map50_95", "mAP50-95"),
    ("seeds", "seeds"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("frontier", "on the frontier"),
]


def accuracy_points(rows: list[dict]) -> list[dict]:
    """One point per (kind, architecture): the mean mAP50-95 of its seeds at all labels
    with the benchmark's recipe (rows with another recipe, INT8 or fewer labels left out)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r.get("labelled_fraction", 1.0) != 1.0 or r.get("recipe") or r.get("int8"):
            continue
        if r.get("precision", "fp32") != "fp32" or r.get("map50_95") is None:
            continue
        if r["model"] in KINDS:
            name = (
                KINDS[r["model"]] if r["model"] == "teacher" else f"{KINDS[r['model']]} {r['size']}"
            )
            groups.setdefault((name, r["size"]), []).append(r)
        elif r["model"] == PEER_NAME:
            groups.setdefault((PEER_NAME, "yolo11n"), []).append(r)
    points = []
    for (name, arch), group in sorted(groups.items()):
        by_seed = {r.get("seed", 0): r["map50_95"] for r in group}  # a rerun replaces a seed
        points.append(
            {
                "point": name,
                "architecture": arch,
                "map50_95": round(statistics.mean(by_seed.values()), 2),
                "seeds": sorted(by_seed),
            }
        )
    return points


def architecture_onnx(arch: str, size: int, work: Path, class_names: list[str]) -> Path | None:
    """A random-weight ONNX of ``arch`` at ``size`` (the peer: its trained export, else the
    random-weight reference); None when it cannot be made here (the reason printed)."""
    if arch == "yolo11n":
        if PEER_ONNX.is_file():
            return PEER_ONNX
        return export_reference(work / f"yolo11n-ref-{size}.onnx", size)
    from distill.checkpoint import make_checkpoint, save_atomic
    from distill.export import export_onnx
    from distill.models.presets import PRESETS, build

    out = work / f"{arch}-{size}.onnx"
    if out.is_file():
        return out
    ckpt = make_checkpoint(
        build(arch, len(class_names)),
        preset=arch,
        scale=PRESETS[arch],
        class_names=tuple(class_names),
        img_size=size,
        config={"pareto": "random weights: latency only"},
    )
    export_onnx(save_atomic(ckpt, work / f"{arch}.pt"), out, img_size=size, validate=False)
    return out


def time_points(points: list[dict], args: argparse.Namespace, class_names: list[str]) -> None:
    """Measure every point's architecture (once each, in one run) and add its latency."""
    frames = synthetic_frames(640, 480)
    timed: dict[str, dict | None] = {}
    for p in points:
        arch = p["architecture"]
        if arch not in timed:
            onnx = architecture_onnx(arch, args.size, args.work, class_names)
            if onnx is None:
                timed[arch] = None
            else:
                with Detector(onnx, backend="onnxruntime", threads=args.threads) as det:
                    timed[arch] = measure(det, frames, 1, args.warmup, args.runs)
        lat = timed[arch]
        p["p50_ms"] = lat["p50_ms"] if lat else None
        p["p99_ms"] = lat["p99_ms"] if lat else None
        p["infer_ms"] = lat["infer_ms"] if lat else None


def mark_frontier(points: list[dict]) -> None:
    """``frontier``: no other timed point is both faster and more accurate."""
    timed = [p for p in points if p.get("p50_ms") is not None]
    for p in points:
        p["frontier"] = p in timed and not any(
            q is not p
            and q["p50_ms"] <= p["p50_ms"]
            and q["map50_95"] >= p["map50_95"]
            and (q["p50_ms"] < p["p50_ms"] or q["map50_95"] > p["map50_95"])
            for q in timed
        )


def missing(points: list[dict]) -> list[str]:
    """What a full picture has that this one lacks, each with how to get it."""
    have = {p["point"] for p in points}
    out = []
    for size in ("nano", "small"):
        for kind in ("scratch", "distilled"):
            if f"{kind} {size}" not in have:
                flag = "" if size == "nano" else f" --student-sizes {size}"
                out.append(
                    f"{kind} {size}: no row in accuracy.json yet "
                    f"(python -m benchmarks.accuracy --only scratch hybrid{flag})"
                )
    if "teacher" not in have:
        out.append("teacher: no row (python -m benchmarks.accuracy --only teacher)")
    if PEER_NAME not in have:
        out.append(f"{PEER_NAME}: no row (python -m benchmarks.peer --epochs 16)")
    out += [
        f"{p['point']}: not timed (see the output above)" for p in points if p["p50_ms"] is None
    ]
    return out


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    timed = sorted((p for p in points if p["p50_ms"] is not None), key=lambda p: p["p50_ms"])
    for p in timed:
        ax.scatter(p["p50_ms"], p["map50_95"], color="tab:red" if p["frontier"] else "tab:blue")
        ax.annotate(
            p["point"], (p["p50_ms"], p["map50_95"]), textcoords="offset points", xytext=(5, 4)
        )
    front = [p for p in timed if p["frontier"]]
    ax.plot([p["p50_ms"] for p in front], [p["map50_95"] for p in front], "r--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, ms (ONNX Runtime, batch 1, log scale)")
    ax.set_ylabel("mAP50-95 (synth benchmark)")
    ax.set_title("Accuracy against latency (red: the frontier)")
    ax.grid(True, alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def write_results(doc: dict, out_dir: Path) -> Path:
    path = write_json_atomic(out_dir / "pareto.json", doc)
    lines = [
        f"# Accuracy against latency ({doc['date']})",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {doc['machine']}. Latency: {doc['latency']}.",
        "",
        f"Accuracy: `{doc['accuracy']}` (mAP50-95 on the synth val split at each row's own "
        "input size and epochs; the mean of the seeds that ran).",
        "",
        *markdown_table(doc["rows"], COLUMNS),
        "",
        *(["Missing:", "", *[f"- {m}" for m in doc["missing"]], ""] if doc["missing"] else []),
    ]
    write_atomic(path.with_suffix(".md"), "\n".join(lines))
    plot(doc["rows"], path.with_suffix(".png"))
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.pareto", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--accuracy", type=Path, default=ACCURACY, help="the accuracy results")
    p.add_argument("--size", type=int, default=320, help="input size of every timed model")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.add_argument(
        "--classes", type=int, default=8, help="classes of the timed heads (the synth set's 8)"
    )
    p.add_argument("--work", type=Path, default=Path("runs/pareto"), help="exports go here")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.accuracy.is_file():
        raise SystemExit(f"--accuracy {args.accuracy}: file not found")
    rows = load_results(args.accuracy)
    points = accuracy_points(rows)
    if not points:
        raise SystemExit(f"{args.accuracy}: no row at all labels with the benchmark's recipe")
    args.work.mkdir(parents=True, exist_ok=True)
    time_points(points, args, [f"class{i}" for i in range(args.classes)])
    mark_frontier(points)
    doc = {
        "command": command_line("pareto", argv),
        "machine": machine(),
        "date": today(),
        "latency": f"ONNX Runtime, batch 1, {args.size}x{args.size} input, 640x480 frames, "
        f"{args.runs} runs after {args.warmup} warm-up, random-weight exports of each "
        "architecture (latency does not depend on the weights), one run for all",
        "accuracy": os.path.relpath(args.accuracy),
        "rows": points,
        "missing": missing(points),
    }
    path = write_results(doc, args.out_dir)
    print(f"wrote {path}, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
