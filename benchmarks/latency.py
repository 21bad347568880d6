"""Latency benchmark: per model, backend and batch size, per-stage p50/p90/p99 and throughput.

    python -m benchmarks.latency student.onnx [more models] --batch 1 4 --runs 200
    python -m benchmarks.latency student.onnx --peer   # + the trained peer (benchmarks/peer.py)

For each (model, backend, batch): warm-up, then ``--runs`` calls of ``Detector.detect``
(batch 1) or ``detect_batch``; percentiles of the per-call wall time, medians of each
stage, throughput; and, in interleaved rounds, the pure ``backend.infer`` throughput on the
same input and (batch 1) the throughput of ``Detector.stream`` pipelined and sequential.
Rows are merged into ``benchmarks/results/latency.json`` by (model, backend, precision,
batch, input) and the whole table is rewritten to ``latency.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import command_line, parse_size, video_frames
from benchmarks.peer import LATENCY_ONNX as PEER_ONNX
from benchmarks.peer import NAME as PEER_NAME
from runtime.errors import BackendUnavailable, ModelFileError
from runtime.files import write_atomic, write_json_atomic
from runtime.measure import machine, markdown_table, percentile, synthetic_frames, today
from runtime.pipeline import Detector

RESULTS = Path(__file__).resolve().parent / "results" / "latency.json"
ROUNDS = 5  # interleaved rounds of the throughput comparison
KEY = ("model", "backend", "precision", "batch", "input")
MD_COLUMNS = (
    ("model", "model"),
    ("backend", "backend"),
    ("precision", "prec."),
    ("batch", "batch"),
    ("input", "input"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p99_ms", "p99 ms"),
    ("throughput_fps", "fps"),
    ("preprocess_ms", "pre ms"),
    ("infer_ms", "infer ms"),
    ("postprocess_ms", "post ms"),
    ("pre_post_pct_of_infer", "pre+post % infer"),
    ("infer_only_fps", "infer-only fps"),
    ("pipelined_fps", "pipelined fps"),
    ("pipelined_pct_of_infer_only", "pipelined % infer-only"),
    ("machine", "machine"),
)


def measure(det: Detector, frames: list[np.ndarray], batch: int, warmup: int, runs: int) -> dict:
    """Run the measurements of one row (see the module docstring); times in ms."""
    cycle = itertools.cycle(frames)
    calls = [[next(cycle) for _ in range(batch)] for _ in range(warmup + runs)]
    wall, pre, infer, post = [], [], [], []
    for i, images in enumerate(calls):
        t0 = time.perf_counter()
        results = [det.detect(images[0])] if batch == 1 else det.detect_batch(images)
        dt = (time.perf_counter() - t0) * 1e3
        if i < warmup:
            continue
        timings = [t for _, t in results]
        wall.append(dt)
        pre.append(sum(t.preprocess_ms for t in timings))
        infer.append(sum(t.infer_ms for t in timings))
        post.append(sum(t.postprocess_ms for t in timings))

    # Throughputs to compare, measured in interleaved rounds (median over rounds) so
    # that all three see the same machine load: backend.infer alone on a pre-processed
    # batch, and (batch 1) Detector.stream sequential and pipelined.
    x = det._pre.batch(batch)
    k = max(10, runs // ROUNDS)
    stream_frames = [next(cycle) for _ in range(k)]
    list(det.stream(stream_frames[:warmup], pipelined=True))
    fps: dict[str, list[float]] = {"infer_only_fps": [], "sequential_fps": [], "pipelined_fps": []}
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(k):
            det.backend.infer(x)
        fps["infer_only_fps"].append(batch * k / (time.perf_counter() - t0))
        if batch == 1:
            for pipelined, key in ((False, "sequential_fps"), (True, "pipelined_fps")):
                t0 = time.perf_counter()
                n = sum(1 for _ in det.stream(stream_frames, pipelined=pipelined))
                fps[key].append(n / (time.perf_counter() - t0))
    rates = {key: statistics.median(v) for key, v in fps.items() if v}

    med = {k: statistics.median(v) for k, v in (("pre", pre), ("infer", infer), ("post", post))}
    row = {
        "p50_ms": percentile(wall, 50),
        "p90_ms": percentile(wall, 90),
        "p99_ms": percentile(wall, 99),
        "throughput_fps": batch * len(wall) / (sum(wall) / 1e3),
        "preprocess_ms": med["pre"],
        "infer_ms": med["infer"],
        "postprocess_ms": med["post"],
        "pre_post_pct_of_infer": 100.0 * (med["pre"] + med["post"]) / med["infer"],
        **rates,
    }
    if batch == 1:
        row["pipelined_pct_of_infer_only"] = (
            100.0 * rates["pipelined_fps"] / rates["infer_only_fps"]
        )
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """Rows of ``new`` replace rows of ``old`` with the same key (model, backend,
    precision, batch, input); the result is sorted by that key."""
    merged = {tuple(r.get(k) for k in KEY): r for r in old}
    for r in new:
        merged[tuple(r[k] for k in KEY)] = r
    return sorted(merged.values(), key=lambda r: tuple(str(r.get(k)) for k in KEY))


def write_results(path: Path, command: str, rows: list[dict]) -> dict:
    """Merge ``rows`` into ``path`` (JSON) and rewrite the Markdown table beside it."""
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    doc = {"command": command, "machine": machine(), "date": today(), "rows": merge_rows(old, rows)}
    write_json_atomic(path, doc)
    lines = [
        f"# Latency ({doc['date']})",
        "",
        f"Latest command: `{command}`",
        "",
        "Per-call wall-time percentiles; per-stage medians (for batch > 1, summed over the "
        "batch); throughput in frames/s. `infer-only fps`: `backend.infer` alone on a "
        "pre-processed batch; `pipelined fps`: `Detector.stream` with decode/pre-processing "
        "overlapped (batch 1).",
        "",
        *markdown_table(doc["rows"], list(MD_COLUMNS)),
    ]
    write_atomic(path.with_suffix(".md"), "\n".join(lines) + "\n")
    return doc


def build_yolo11n_reference(path: Path, size: int) -> Path | None:
    """A random-weight YOLO11n at ``size`` x ``size`` in the Understudy layout, exported by
    Ultralytics' own command line in its side env (``benchmarks.peer.export_reference``;
    the project never imports Ultralytics); None, saying why, without that env.

    Random weights give the architecture's latency, not its accuracy."""
    from benchmarks.peer import export_reference

    return export_reference(path, size)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("models", nargs="*", type=Path, help=".onnx / .engine / .pt model files")
    p.add_argument(
        "--names", nargs="*", default=None, help="row names for the models (default: file stems)"
    )
    p.add_argument(
        "--backends",
        nargs="*",
        default=None,
        help="backends to try per model (default: by file type)",
    )
    p.add_argument("--batch", nargs="*", type=int, default=[1], help="batch sizes")
    p.add_argument(
        "--input-size-src",
        type=parse_size,
        default=(640, 480),
        help="size of the generated frames, WxH (ignored with --frames)",
    )
    p.add_argument("--frames", type=Path, default=None, help="a video whose frames to use")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--threads", type=int, default=None, help="backend intra-op threads")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--out", type=Path, default=RESULTS, help="results JSON (Markdown beside it)")
    p.add_argument(
        "--yolo11n-reference",
        action="store_true",
        help="add a random-weight YOLO11n ONNX, exported by Ultralytics' CLI in its side "
        "env (bash scripts/side_env/ultralytics.sh)",
    )
    p.add_argument("--reference-size", type=int, default=320, help="input size of the reference")
    p.add_argument(
        "--peer",
        nargs="?",
        const=PEER_ONNX,
        type=Path,
        default=None,
        help="add the trained peer (row peer-yolo11n): the ONNX `python -m benchmarks.peer` "
        f"wrote (default {PEER_ONNX.relative_to(PEER_ONNX.parents[2])})",
    )
    return p


def models_to_measure(
    p: argparse.ArgumentParser, args: argparse.Namespace
) -> list[tuple[Path, str]]:
    """(model file, row name) pairs: the models given, plus the YOLO11n reference if asked
    for and buildable here, plus the trained peer (``--peer``: row ``peer-yolo11n``)."""
    models = list(args.models)
    names = list(args.names) if args.names else [m.stem for m in models]
    if len(names) != len(models):
        p.error("--names needs one name per model")
    if args.yolo11n_reference:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "understudy"
        ref = build_yolo11n_reference(
            cache / f"yolo11n-ref-{args.reference_size}.onnx", args.reference_size
        )
        if ref is not None:
            models.append(ref)
            names.append("yolo11n-reference")
    if args.peer is not None:
        if not args.peer.is_file():
            p.error(
                f"--peer: {args.peer} not found; train the peer first: python -m benchmarks.peer"
            )
        models.append(args.peer)
        names.append(PEER_NAME)
    if not models:
        p.error("no models to measure")
    return list(zip(models, names))


def measure_model(
    model: Path, name: str, frames: list[np.ndarray], source: str, args: argparse.Namespace
) -> list[dict]:
    """The rows of one model: one per backend and batch size it can run."""
    rows = []
    for backend in args.backends or [None]:
        for batch in args.batch:
            try:
                det = Detector(
                    model,
                    backend=backend,
                    threads=args.threads,
                    device=args.device,
                    max_batch=batch,
                )
            except (BackendUnavailable, ModelFileError) as e:
                print(f"skip {name} on {backend}: {e}")
                break
            with det:
                if det.max_batch < batch:
                    print(f"skip {name} batch {batch}: the model takes at most {det.max_batch}")
                    continue
                h, w = det.spec.input_size
                print(
                    f"{name} {det.backend_name} {det.precision} batch {batch} {w}x{h} ...",
                    flush=True,
                )
                row = {
                    "model": name,
                    "backend": det.backend_name,
                    "precision": det.precision,
                    "batch": batch,
                    "input": f"{w}x{h}",
                    **measure(det, frames, batch, args.warmup, args.runs),
                    "source_input": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
                    "frames": source,
                    "threads": args.threads,
                    "runs": args.runs,
                    "warmup": args.warmup,
                    "model_path": str(model),
                    "machine": machine(),
                    "date": today(),
                }
            rows.append(row)
            print(row_summary(row))
    return rows


def row_summary(row: dict) -> str:
    """One line of a measured row: percentiles, throughput, the two ratios."""
    text = (
        f"  p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  "
        f"{row['throughput_fps']:.1f} fps  "
        f"pre+post {row['pre_post_pct_of_infer']:.1f}% of infer"
    )
    if row["batch"] == 1:
        text += f"  pipelined {row['pipelined_pct_of_infer_only']:.1f}% of infer-only"
    return text


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    models = models_to_measure(p, args)
    if args.frames:
        frames, source = video_frames(args.frames, 64), str(args.frames)
    else:
        frames, source = synthetic_frames(*args.input_size_src), "synthetic"
    rows = [
        row for model, name in models for row in measure_model(model, name, frames, source, args)
    ]
    if not rows:
        print("nothing measured")
        return 1
    write_results(args.out, command_line("latency", argv), rows)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
