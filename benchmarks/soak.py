"""Soak benchmark: N camera streams with reconnect churn against `understudy serve` for a
long time, at a given overload.

    python -m benchmarks.soak --model student.onnx [--streams 4] [--fps 30 | --overload 2]
        [--duration 600] [--session-s 3] [--budget-ms 33] [--video synth.mp4]

A fresh server runs in another process (``python -m runtime.cli serve`` with its
defaults, plus the options given). Each of ``--streams`` clients opens a channel and a
StreamDetect call on a TCP connection of its own, sends JPEG frames open loop at ``--fps``
for ``--session-s`` seconds (like a camera whose video ends), closes the call and the
connection, waits for its answers and reconnects at once, until ``--duration`` is over.
``--overload X`` sets the frame rate to X times what the model answers (1000 / the
start-up p50 of the model, over all streams). Every ``--sample-s`` the server's resident
memory, threads and open file descriptors are read from /proc.

Checked (the issue's targets): no errors (stream errors, frame errors, the server's exit
status, health SERVING at the end); every session longer than 1 s gets answers; the ratio
of the best to the worst stream's delivered FPS (over the run, and the worst 10 s window);
answered frames late by the server's clock; resident memory growth after warm-up.

Writes ``benchmarks/results/soak.json`` (format: ``benchmarks/README.md``), ``soak.md``
and ``soak.png`` (memory, threads and descriptors over time).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import command_line, parse_size
from benchmarks.soak_report import summarize, write_results
from benchmarks.stream import RESULTS, add_server_options, serve_args
from benchmarks.stream_load import Server, bench_frames, send_paced
from runtime.client import DetectorClient, timestamp_ns
from runtime.measure import rss_mb

WINDOW_S = 10.0  # the fairness windows


@dataclass
class Session:
    """One StreamDetect call of one client: frames sent and what came back."""

    stream: int
    index: int
    start: float  # perf_counter s
    end: float = 0.0
    sent: int = 0
    answered: int = 0
    late: int = 0  # answered with budget_met false (the server's clock)
    late_e2e: int = 0  # answered over the budget end to end (client clock)
    dropped: int = 0
    frame_errors: int = 0
    errors: list[str] = field(default_factory=list)
    answer_times: list[float] = field(default_factory=list)  # perf_counter s


def proc_sample(pid: int) -> dict | None:
    """The server's RSS (MiB), thread count and open descriptors now; None once gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    threads = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("Threads:"))
    return {"rss_mb": round(rss_mb(pid) or 0.0, 2), "threads": threads, "fds": fds}


def run_session(
    target: str, frames: list[bytes], fps: float, args: argparse.Namespace, s: Session
) -> None:
    """One session: a new channel, ``args.session_s`` seconds of frames at ``fps``."""
    client = DetectorClient(target, own_connection=True)  # a reconnect is a new connection
    call = client.open_stream(camera_id=f"cam{s.stream}", budget_ms=args.budget_ms, queue_size=8)

    def receive() -> None:
        try:
            for r in call:
                kind = r.WhichOneof("kind")
                if kind == "result":
                    s.answered += 1
                    s.answer_times.append(time.perf_counter())
                    s.late += not r.result.budget_met
                    e2e = (time.time_ns() - timestamp_ns(r.result.capture_time)) / 1e6
                    s.late_e2e += e2e > args.budget_ms
                elif kind == "dropped":
                    s.dropped += 1
                else:
                    s.frame_errors += 1
        except Exception as e:  # the server died or refused the stream
            s.errors.append(repr(e))

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    s.sent = send_paced(call, frames, fps, s.start, s.start + args.session_s)
    call.close()
    receiver.join(30)
    s.end = time.perf_counter()
    client.close()


def run_client(
    target: str,
    frames: list[bytes],
    fps: float,
    args: argparse.Namespace,
    k: int,
    stop: float,
    out: list[Session],
) -> None:
    """Sessions of stream ``k`` back to back until ``stop`` (perf_counter s)."""
    index = 0
    while time.perf_counter() + 0.5 < stop:
        session = Session(k, index, time.perf_counter())
        out.append(session)
        run_session(target, frames, fps, args, session)
        index += 1


def sample(pid: int, t0: float, every: float, done: threading.Event, out: list[dict]) -> None:
    while not done.wait(every):
        s = proc_sample(pid)
        if s is not None:
            out.append({"t_s": round(time.perf_counter() - t0, 2), **s})


def run_soak(args: argparse.Namespace, frames: list[bytes]) -> dict:
    """The whole run: server, clients, samples; the raw measurements (see soak_report)."""
    load_start = list(os.getloadavg())
    server = Server(serve_args(args.model, args, 1, args.decode[0]))
    pid = server.proc.pid
    with DetectorClient(server.target, timeout=10) as probe:
        p50 = float(probe.model_info().student_latency_p50_ms)
    capacity = 1000.0 / p50 if p50 > 0 else float("nan")
    fps = args.fps if args.overload is None else args.overload * capacity / args.streams
    samples: list[dict] = []
    done = threading.Event()
    t0 = time.perf_counter()
    first = proc_sample(pid)
    samples.append({"t_s": 0.0, **(first or {})})
    sampler = threading.Thread(target=sample, args=(pid, t0, args.sample_s, done, samples))
    sampler.start()
    sessions: list[list[Session]] = [[] for _ in range(args.streams)]
    clients = [
        threading.Thread(
            target=run_client,
            args=(server.target, frames, fps, args, k, t0 + args.duration, sessions[k]),
        )
        for k in range(args.streams)
    ]
    for k, c in enumerate(clients):
        time.sleep(k / (fps * args.streams))  # stagger the first frames
        c.start()
    for c in clients:
        c.join(args.duration + 120)
    elapsed = time.perf_counter() - t0
    done.set()
    sampler.join()
    with DetectorClient(server.target, timeout=10) as probe:
        health = probe.health()
    exit_code = server.stop()
    return {
        "fps_per_stream": fps,
        "capacity_fps": capacity,
        "model_p50_ms": p50,
        "elapsed_s": elapsed,
        "t0": t0,
        "samples": samples,
        "sessions": sessions,
        "health_end": health,
        "server_exit_code": exit_code,
        "worker": server.worker_stats(),
        "load_avg_start": load_start,
        "load_avg_end": list(os.getloadavg()),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", type=Path, required=True, help="model served by `understudy serve`")
    p.add_argument("--streams", type=int, default=4)
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--fps", type=float, default=30.0, help="frames per second per stream")
    rate.add_argument("--overload", type=float, default=None, help="offered / model capacity")
    p.add_argument("--duration", type=float, default=600.0, help="seconds")
    p.add_argument("--session-s", type=float, default=3.0, help="seconds per stream session")
    p.add_argument(
        "--warmup-s", type=float, default=None, help="default: 10%% of the run, at most 60 s"
    )
    p.add_argument("--sample-s", type=float, default=1.0, help="seconds between /proc samples")
    p.add_argument("--budget-ms", type=float, default=33.0)
    p.add_argument("--size", type=parse_size, default=(640, 480), help="frame WIDTHxHEIGHT")
    p.add_argument("--video", type=Path, default=None, help="take frames from this video")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--name", default="soak", help="result file name (without extension)")
    add_server_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"--model {args.model}: file not found")
    frames = bench_frames(*args.size, args.video, n=90)
    raw = run_soak(args, frames)
    warmup = args.warmup_s if args.warmup_s is not None else min(60.0, 0.1 * args.duration)
    row = summarize(raw, args, warmup, WINDOW_S)
    path = write_results(args.out_dir, args.name, command_line("soak", argv), row, raw["samples"])
    failed = [t["check"] for t in row["targets"] if not t["passed"]]
    verdict = "all met" if not failed else "missed: " + ", ".join(failed)
    print(f"wrote {path}, .md and .png; targets {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
