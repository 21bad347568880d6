"""The floor under every gRPC latency figure: a bidirectional stream that does nothing.

    python -m benchmarks.grpc_floor [--video data/synth_demo/video.mp4] [--frames 300]
        [--fps 30] [--sizes 1000 frame]

An echo server in another process (grpcio, the same thread-pool server as
``understudy serve``) answers each message of one bidirectional stream with a reply of
``--reply-bytes`` (about the size of a DetectResponse with a few boxes), doing no work.
A client sends messages of each ``--sizes`` (bytes; ``frame`` = the median size of the
video's frames as JPEG quality 90, what the stream and ROS benchmarks send) and times
each round trip (message written -> reply read):

- ``sync``: grpcio's blocking API, the request iterator fed from a queue, as
  ``runtime.client.StreamCall`` (and so ``understudy stream`` and the ROS bridge) does;
- ``aio``: grpcio's asyncio API on one event loop.

Messages leave at ``--fps`` (paced: the CPU idles between frames, as for a camera) and
back to back (``--fps 0`` rows). The round trip of a message is the latency that any
service behind gRPC adds on this machine before it does anything: the "added" and
"overhead" figures of ``benchmarks.stream``, ``benchmarks.kserve`` and ``benchmarks.ros``
cannot go below it.

Writes ``benchmarks/results/grpc_floor.json`` and ``grpc_floor.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.common import command_line
from runtime.files import write_atomic, write_json_atomic
from runtime.measure import machine, markdown_table, percentile, today

SERVICE = "understudy.bench.Echo"
METHOD = f"/{SERVICE}/Stream"
WARMUP = 20  # round trips left out of the statistics (channel and thread start-up)


def serve(port: int, reply_bytes: int) -> None:
    """The echo server: answers every message of a stream with ``reply_bytes`` bytes."""
    from concurrent import futures

    import grpc

    reply = b"r" * reply_bytes

    def stream(requests: Iterator[bytes], context: object) -> Iterator[bytes]:
        for _ in requests:
            yield reply

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.stream_stream_rpc_method_handler(stream)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {"Stream": handler})]
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"listening {bound}", flush=True)
    server.wait_for_termination()


def start_server(reply_bytes: int) -> tuple[subprocess.Popen, int]:
    """The echo server in a child process on a free port; returns (process, port)."""
    cmd = [sys.executable, "-m", "benchmarks.grpc_floor", "--serve", "0"]
    proc = subprocess.Popen(
        [*cmd, "--reply-bytes", str(reply_bytes)],
        cwd=Path(__file__).resolve().parents[1],  # the project, where `benchmarks` imports
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("listening "):
        proc.kill()
        raise RuntimeError(f"the echo server did not start (said {line!r})")
    return proc, int(line.split()[1])


def _pause_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def sync_round_trips(port: int, payload: bytes, n: int, fps: float) -> list[float]:
    """Round trips (s) of ``n`` messages over grpcio's blocking stream API."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        outbox: queue.Queue[bytes | None] = queue.Queue()

        def requests() -> Iterator[bytes]:
            while (item := outbox.get()) is not None:
                yield item

        replies = channel.stream_stream(METHOD)(requests())
        times = []
        t0 = time.perf_counter()
        for i in range(n):
            if fps > 0:
                _pause_until(t0 + i / fps)
            start = time.perf_counter()
            outbox.put(payload)
            next(replies)
            times.append(time.perf_counter() - start)
        outbox.put(None)
        for _ in replies:  # the server ends the call once the requests end
            pass
    return times


async def _aio_round_trips(port: int, payload: bytes, n: int, fps: float) -> list[float]:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(METHOD)()
        times = []
        t0 = time.perf_counter()
        for i in range(n):
            if fps > 0:
                await asyncio.sleep(max(0.0, t0 + i / fps - time.perf_counter()))
            start = time.perf_counter()
            await call.write(payload)
            await call.read()
            times.append(time.perf_counter() - start)
        await call.done_writing()
        await call.code()  # the server ends the call once the requests end
    return times


def aio_round_trips(port: int, payload: bytes, n: int, fps: float) -> list[float]:
    """Round trips (s) of ``n`` messages over grpcio's asyncio stream API."""
    return asyncio.run(_aio_round_trips(port, payload, n, fps))


CLIENTS = {"sync": sync_round_trips, "aio": aio_round_trips}


def frame_bytes(video: Path, frames: int = 300) -> int:
    """Median size of the video's first ``frames`` frames as JPEG quality 90."""
    from benchmarks.common import video_frames
    from runtime.frames import encode_image

    sizes = [len(encode_image(f, "jpeg", 90)) for f in video_frames(video, frames)]
    return int(statistics.median(sizes))


def summarize(times: list[float]) -> dict:
    ms = [t * 1e3 for t in times[WARMUP:]] or [t * 1e3 for t in times]
    return {
        "round_trips": len(ms),
        "rtt_p50_ms": round(percentile(ms, 50), 3),
        "rtt_p90_ms": round(percentile(ms, 90), 3),
        "rtt_p99_ms": round(percentile(ms, 99), 3),
    }


def measure(args: argparse.Namespace) -> list[dict]:
    sizes = [frame_bytes(args.video) if s == "frame" else int(s) for s in args.sizes]
    proc, port = start_server(args.reply_bytes)
    rows = []
    try:
        for fps in (args.fps, 0.0):
            for size in sizes:
                payload = os.urandom(size)  # incompressible, like JPEG data
                for name in args.clients:
                    times = CLIENTS[name](port, payload, args.frames + WARMUP, fps)
                    row = {"client": name, "fps": fps, "request_bytes": size}
                    rows.append({**row, "reply_bytes": args.reply_bytes, **summarize(times)})
                    print(rows[-1], flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows


COLUMNS = [
    ("client", "client"),
    ("fps", "fps (0 = back to back)"),
    ("request_bytes", "request bytes"),
    ("reply_bytes", "reply bytes"),
    ("round_trips", "round trips"),
    ("rtt_p50_ms", "round trip p50 ms"),
    ("rtt_p90_ms", "p90"),
    ("rtt_p99_ms", "p99"),
]


def write_results(out_dir: Path, doc: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_json_atomic(out_dir / "grpc_floor.json", doc)
    lines = [
        f"# gRPC floor: a bidirectional stream that does nothing ({doc['date']})",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {doc['machine']}; grpcio {doc['grpcio']}",
        "",
        "Round trip = message written by the client -> reply read by the client; the echo "
        f"server (another process) does no work. The first {WARMUP} round trips of each row "
        "are left out.",
        "",
        *markdown_table(doc["rows"], COLUMNS),
        "",
    ]
    write_atomic(out_dir / "grpc_floor.md", "\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--video", type=Path, default=Path("data/synth_demo/video.mp4"))
    ap.add_argument("--frames", type=int, default=300, help="round trips per row")
    ap.add_argument("--fps", type=float, default=30.0, help="pace of the paced rows")
    ap.add_argument(
        "--sizes",
        nargs="+",
        default=["1000", "frame"],
        help="request sizes in bytes; 'frame' = the video's median JPEG frame",
    )
    ap.add_argument("--clients", nargs="+", choices=sorted(CLIENTS), default=["sync", "aio"])
    ap.add_argument("--reply-bytes", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.reply_bytes)
        return 0
    if "frame" in args.sizes and not args.video.exists():
        ap.error(
            f"--video {args.video} does not exist: make it with `understudy data synth --out "
            "data/synth_demo --config configs/synth_demo.yaml` or pass byte counts to --sizes"
        )
    import grpc

    doc = {
        "command": command_line("grpc_floor", argv),
        "machine": machine(),
        "date": today(),
        "grpcio": grpc.__version__,
        "rows": measure(args),
    }
    print(f"wrote {write_results(args.out, doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
