"""Stream-load benchmark: N concurrent camera streams at F FPS against `understudy serve`.

    python -m benchmarks.stream --model student.onnx [--scenarios 1x30 4x30] [--duration 20]
        [--budget-ms 33] [--size 640x480] [--micro-batch] [--decode reduced full]
        [--video synth.mp4]

For every scenario ``NxF`` a fresh server runs in another process (``python -m runtime.cli
serve``). Each stream has its own channel and sends pre-encoded JPEG frames open loop:
frame ``i`` leaves at ``t0 + offset + i / F`` whatever the answers do (streams are
staggered by ``1 / (N F)``). Per row: delivered FPS (answers per second, all streams),
drop rate (drop notices / frames settled), end-to-end p50/p90/p99 (answer arrival minus
capture time, client clock), overhead (end-to-end minus inference; ``server_overhead``:
the server's total minus inference), budget-miss rate (answered frames whose end-to-end
exceeded the budget), and the server's resident memory (VmRSS, sampled every 0.5 s): when
the streams start, a quarter of the way in (warm), and at the end, with the growth from
warm to end. ``--micro-batch`` adds the same scenarios with ``--max-batch`` > 1, and
``--decode`` runs them under each decode mode of ``understudy serve``.

Writes ``benchmarks/results/stream.json`` (format: ``benchmarks/README.md``) and
``stream.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from benchmarks.common import command_line, parse_size
from benchmarks.stream_load import Server, bench_frames, cpu_load, run_streams, worker_view
from runtime.files import write_atomic, write_json_atomic
from runtime.frames import decode_encoded
from runtime.measure import machine, markdown_table, today
from runtime.stream_stats import StreamStats

RESULTS = Path(__file__).resolve().parent / "results"
RECOVERY_S = 3.0  # after --cpu-load ends: the drop rule's 2 s window and its 1 s refresh
# what a row takes from the merged StreamStats summary of its streams
SUMMARY_KEYS = (
    "delivered_fps",
    "drop_rate",
    "e2e_p50_ms",
    "e2e_p90_ms",
    "e2e_p99_ms",
    "overhead_p50_ms",
    "server_overhead_p50_ms",
    "stage_p50_ms",
    "infer_p50_ms",
    "budget_miss_rate",
    "server_budget_miss_rate",
    "sent",
    "answered",
    "dropped",
    "dropped_by_reason",
    "budget_drops_on_arrival",
    "budget_drop_queue_p50_ms",
    "errors",
)
# what is printed of a row as soon as its scenario ends
PROGRESS_KEYS = (
    "decode",
    "streams",
    "fps_per_stream",
    "max_batch",
    "delivered_fps",
    "drop_rate",
    "e2e_p50_ms",
    "e2e_p99_ms",
)
MD_COLUMNS = (
    ("encode", "encode"),
    ("decode", "decode"),
    ("threads", "threads"),
    ("deadline_from", "budget from"),
    ("streams", "streams"),
    ("fps_per_stream", "fps/stream"),
    ("max_batch", "max batch"),
    ("budget_ms", "budget ms"),
    ("delivered_fps", "delivered fps"),
    ("delivered_fps_runs", "delivered fps of each run"),
    ("drop_rate", "drop rate"),
    ("e2e_p50_ms", "e2e p50"),
    ("e2e_p90_ms", "e2e p90"),
    ("e2e_p99_ms", "e2e p99"),
    ("infer_p50_ms", "infer p50"),
    ("overhead_p50_ms", "overhead p50"),
    ("server_overhead_p50_ms", "server overhead p50"),
    ("budget_miss_rate", "budget miss"),
    ("server_budget_miss_rate", "late (server clock)"),
    ("schedule", "schedule"),
    ("stream_fps_min", "stream fps min"),
    ("stream_fps_max", "stream fps max"),
    ("cpu_load_s", "CPU load s"),
    ("delivered_fps_during_load", "fps during load"),
    ("delivered_fps_after_load", "fps after load"),
    ("model_busy", "model busy"),
    ("budget_drops_on_arrival", "budget drops on arrival"),
    ("held_s", "held s"),
    ("load_1min", "load avg start / end"),
    ("server_rss_mb_start", "RSS start MB"),
    ("server_rss_mb_warm", "RSS warm MB"),
    ("server_rss_mb_end", "RSS end MB"),
)


# server options passed on only when given: a row without them measures serve's defaults
PASSED_ON = ("threads", "reply_margin_ms", "service_quantile", "deadline_from", "schedule")


def serve_args(model: Path, args: argparse.Namespace, max_batch: int, decode: str) -> list[str]:
    """The ``understudy serve`` options of one scenario."""
    out = ["--model", str(model), "--budget-ms", str(args.budget_ms), "--policy", args.policy]
    out += ["--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    out += ["--decode", decode]
    for key in PASSED_ON:
        value = getattr(args, key)
        if value is not None:
            out += ["--" + key.replace("_", "-"), str(value)]
    return out


def per_stream(results: list, elapsed: float) -> list[dict]:
    """One entry per camera stream: its delivered FPS, drop rate and late rates (answers
    over the budget end to end on the client, and by the server's own clock)."""
    out = []
    for k, r in enumerate(results):
        s = r.stats.summary(sent=r.sent, elapsed_s=elapsed)
        out.append(
            {
                "stream": k,
                "sent": r.sent,
                "answered": s["answered"],
                "delivered_fps": s["delivered_fps"],
                "drop_rate": s["drop_rate"],
                "late_rate": s["budget_miss_rate"],
                "server_late_rate": s["server_budget_miss_rate"],
            }
        )
    return out


def fairness(streams: list[dict]) -> dict:
    """The spread of delivered FPS across streams: min, max and max / min."""
    fps = [s["delivered_fps"] for s in streams]
    low, high = min(fps), max(fps)
    return {
        "stream_fps_min": low,
        "stream_fps_max": high,
        "fairness_ratio": round(high / low, 3) if low > 0 else None,
    }


def run_scenario(
    model: Path,
    streams: int,
    fps: float,
    args: argparse.Namespace,
    frames: list[bytes],
    max_batch: int,
    decode: str,
) -> dict:
    """A fresh server, ``streams`` cameras at ``fps`` against it for ``args.duration``
    seconds, the server stopped: the scenario's row."""
    load_start = list(os.getloadavg())
    server = Server(serve_args(model, args, max_batch, decode))
    try:
        rss = {"start": server.rss_mb()}
        server.start_sampling()
        with cpu_load(args.cpu_load):
            results, t0, elapsed = run_streams(
                server.target, frames, streams, fps, args.duration, args.budget_ms
            )
        rss["end"] = server.rss_mb()
    finally:
        exit_code = server.stop()
    warm = [mb for t, mb in server.rss_samples if t >= t0 + args.duration / 4]
    rss["warm"] = round(warm[0], 1) if warm else None
    rss["max"] = round(max(mb for _, mb in server.rss_samples), 1) if server.rss_samples else None
    total = StreamStats()
    for r in results:
        total.merge(r.stats)
    summary = total.summary(sent=sum(r.sent for r in results), elapsed_s=elapsed)
    streams_view = per_stream(results, elapsed)
    return {
        "streams": streams,
        "fps_per_stream": fps,
        "budget_ms": args.budget_ms,
        **{k: summary[k] for k in SUMMARY_KEYS},
        **{f"server_rss_mb_{k}": rss[k] for k in ("start", "warm", "end", "max")},
        **fairness(streams_view),
        "per_stream": streams_view,
        "max_batch": max_batch,
        "policy": args.policy,
        "decode": decode,
        "encode": args.encode,
        **{key: getattr(args, key) for key in PASSED_ON},  # None: serve's default
        "load_avg_start": load_start,
        "load_avg_end": list(os.getloadavg()),
        "load_1min": f"{load_start[0]:.2f} / {os.getloadavg()[0]:.2f}",
        "duration_s": args.duration,
        "frame": f"{args.size[0]}x{args.size[1]} jpeg",
        "model": model.name,
        "client_dropped": sum(r.client_dropped for r in results),
        "stream_errors": [e for r in results for e in r.errors],
        "server_exit_code": exit_code,
        **worker_view(server.worker_stats(), elapsed),
        **load_view(results, t0, elapsed, args.cpu_load),
    }


def load_view(results: list, t0: float, elapsed: float, load_s: float) -> dict:
    """With ``--cpu-load``: answers per second while the other process ran, and from
    ``RECOVERY_S`` after it stopped to the end (the drop rule's window plus its refresh)."""
    if load_s <= 0:
        return {"cpu_load_s": None}
    times = [t - t0 for r in results for t in r.stats.answered_at]
    after = load_s + RECOVERY_S
    return {
        "cpu_load_s": load_s,
        "delivered_fps_during_load": round(sum(t < load_s for t in times) / load_s, 2),
        "delivered_fps_after_load": round(sum(t >= after for t in times) / (elapsed - after), 2)
        if elapsed > after
        else None,
    }


def median_run(runs: list[dict]) -> dict:
    """The run of median delivered FPS (the lower one of an even count) as the row, with
    every run's delivered FPS, late rate and model busy share beside it: on a shared
    2-core machine the same settings can deliver twice as much in one run as in the next."""
    ordered = sorted(runs, key=lambda r: r["delivered_fps"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["repeats"] = len(runs)
    for key in ("delivered_fps", "server_budget_miss_rate", "model_busy"):
        row[f"{key}_runs"] = [r.get(key) for r in runs]
    return row


def row_key(r: dict) -> tuple:
    """What identifies a row: a rerun of the same settings replaces it (``--append``)."""
    return tuple(
        r.get(k)
        for k in (
            "encode",
            "decode",
            "streams",
            "fps_per_stream",
            "max_batch",
            "threads",
            "deadline_from",
            "policy",
            "budget_ms",
            "schedule",
            "cpu_load_s",
        )
    )


def write_results(
    out_dir: Path, name: str, command: str, rows: list[dict], note: str | None = None
) -> Path:
    """``NAME.json`` (format: benchmarks/README.md) and the table ``NAME.md`` beside it;
    ``note``: what the file is, when the commands alone do not say (kept in both)."""
    doc = {"command": command, "machine": machine(), "date": today(), "rows": rows}
    if note:
        doc["note"] = note
    path = write_json_atomic(out_dir / f"{name}.json", doc)
    lines = [
        f"# Stream load ({doc['date']})",
        "",
        *([note, ""] if note else []),
        "Commands (each row of the JSON names its own):",
        "",
        *[f"- `{c}`" for c in dict.fromkeys(r.get("command", command) for r in rows)],
        "",
        f"Machine: {doc['machine']}",
        "",
        "Open-loop camera streams of pre-encoded JPEG frames (raw BGR pixels in rows whose "
        "encode is raw); latencies in ms (end to end = "
        "answer arrival minus capture time on the client; overhead = end to end minus "
        "inference; server overhead = server total minus inference). Drop rate = drop "
        "notices / frames settled; budget miss = answered frames over the budget end to end.",
        "",
        *markdown_table(rows, list(MD_COLUMNS)),
    ]
    write_atomic(path.with_suffix(".md"), "\n".join(lines) + "\n")
    return path


def parse_scenario(text: str) -> tuple[int, float]:
    try:
        n, f = text.lower().split("x")
        return int(n), float(f)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected STREAMSxFPS such as 4x30, got {text!r}") from e


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.stream", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", type=Path, required=True, help="model served by `understudy serve`")
    p.add_argument(
        "--scenarios",
        nargs="+",
        type=parse_scenario,
        default=[(1, 30.0), (4, 30.0)],
        help="STREAMSxFPS, e.g. 1x30 4x30",
    )
    p.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    p.add_argument("--budget-ms", type=float, default=33.0)
    p.add_argument("--size", type=parse_size, default=(640, 480), help="frame WIDTHxHEIGHT")
    p.add_argument("--video", type=Path, default=None, help="take frames from this video")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--name", default="stream", help="result file name (without extension)")
    p.add_argument(
        "--append",
        action="store_true",
        help="keep the rows already in the result file (a row with the same settings is "
        "replaced); each row records its own command",
    )
    add_server_options(p)
    return p


def add_server_options(p: argparse.ArgumentParser) -> None:
    """The options passed on to ``understudy serve``."""
    p.add_argument("--policy", choices=("keep-latest", "queue"), default="keep-latest")
    p.add_argument("--micro-batch", action="store_true", help="also run with --max-batch N")
    p.add_argument("--max-batch", type=int, default=4, help="micro-batch size for --micro-batch")
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument(
        "--threads", type=int, default=None, help="the server's --threads (default: serve's)"
    )
    p.add_argument(
        "--schedule",
        choices=("deficit", "edf", "arrival"),
        default=None,
        help="the server's --schedule (default: serve's)",
    )
    p.add_argument(
        "--decode",
        nargs="+",
        choices=("reduced", "full"),
        default=["reduced"],
        help="the server's --decode mode(s); each runs every scenario",
    )
    p.add_argument(
        "--reply-margin-ms",
        type=float,
        default=None,
        help="the server's --reply-margin-ms (default: serve's)",
    )
    p.add_argument(
        "--service-quantile",
        type=float,
        default=None,
        help="the server's --service-quantile (default: serve's)",
    )
    p.add_argument(
        "--deadline-from",
        choices=("jitter", "arrival", "capture"),
        default=None,
        help="the server's --deadline-from (the streams run on this machine: one clock; "
        "default: serve's)",
    )
    p.add_argument(
        "--note",
        default=None,
        help="a line saying what this results file is, kept in it (with --append the file's "
        "note is kept unless a new one is given)",
    )
    p.add_argument(
        "--encode",
        choices=("jpeg", "raw"),
        default="jpeg",
        help="send the frames as JPEG (quality 90, decoded by the server) or as raw BGR "
        "pixels (no decoding: the server's own overhead without the codec's)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run each scenario this many times (a fresh server each); the row is the run "
        "of median delivered FPS and lists every run's",
    )
    p.add_argument(
        "--cpu-load",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="another process keeps one core busy for the first SECONDS of each scenario "
        "(a CPU shared with other programs); the row adds the delivered FPS during it and "
        f"from {RECOVERY_S:g} s after it",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"--model {args.model}: file not found")
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be at least 1, got {args.repeats}")
    frames = bench_frames(*args.size, args.video)
    if args.encode == "raw":  # the same pictures, as the pixels the JPEGs decode to
        frames = [decode_encoded(f) for f in frames]
    batches = [1, args.max_batch] if args.micro_batch else [1]
    runs = [(dec, mb, n, f) for dec in args.decode for mb in batches for n, f in args.scenarios]
    command = command_line("stream", argv)
    path = args.out_dir / f"{args.name}.json"
    rows = json.loads(path.read_text())["rows"] if args.append and path.is_file() else []
    for dec, mb, n, f in tqdm(runs, desc="stream scenarios", unit="scenario"):
        row = median_run(
            [run_scenario(args.model, n, f, args, frames, mb, dec) for _ in range(args.repeats)]
        )
        row["command"] = command
        rows = [r for r in rows if row_key(r) != row_key(row)]
        tqdm.write(json.dumps({k: row[k] for k in PROGRESS_KEYS}))
        rows.append(row)
    if args.append and path.is_file() and not args.note:
        args.note = json.loads(path.read_text()).get("note")
    path = write_results(args.out_dir, args.name, command, rows, args.note)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
