"""ROS 2 bridge benchmark: the latency `understudy ros` adds between a camera topic and
its Detection2DArray, at N cameras x F FPS.

    .side-envs/ros/venv/bin/python -m benchmarks.ros --model student.onnx
        [--scenarios 1x30 4x30] [--inputs compressed image-jpeg image-raw] [--duration 20]

Run it with the ROS side env's Python (scripts/side_env/ros.sh). For every input kind and
scenario ``NxF``: a fresh ``understudy serve`` and a fresh bridge (``python -m runtime.ros``
with N input topics and ``--trace``) run in other processes; this process publishes N
camera topics open loop at F FPS each (640x480 frames: ``compressed`` = CompressedImage
JPEG bytes the bridge passes through; ``image-jpeg`` / ``image-raw`` = Image bgr8 that the
bridge sends as JPEG / raw pixels), each message stamped with its publish time, and
records when each Detection2DArray arrives. Per answered frame:

- ``e2e`` = arrival - stamp (one clock: everything runs on this machine);
- ``server`` = the server's total time for the frame (received -> answer ready), from the
  bridge's trace, joined by topic and stamp;
- ``added`` = e2e - server: what the bridge adds, in four parts: ``ros_in`` (stamp ->
  the bridge's subscription callback offers the frame: DDS delivery, the executor),
  ``grpc`` (offered -> its answer read back, less the server's time: encoding on the
  sender thread, gRPC both ways: what any gRPC client pays), ``publish`` (answer read ->
  Detection2DArray built and published), ``ros_out`` (published -> arrival here);
- ``over_grpc`` = added - grpc = ros_in + publish + ros_out: what the bridge adds over a
  gRPC client that streams the same frames to the server directly.

Then, on the same server, ``direct``: N clients without ROS stream the same frames at the
same rate straight to the server (runtime.client's StreamCall with a one-frame slot and a
receiver thread, as the bridge's link does), each frame stamped when it is offered;
``direct_added`` = answer read - offered - the server's total time: what any such gRPC
client adds, the floor for the bridge's ``grpc`` part. ``--transport unix`` serves on a
Unix domain socket too (``understudy serve --unix-socket``) and both clients dial it.

Frames of the first ``--warmup`` seconds are left out. Drops: frames published that
never got an answer (the bridge's slot, or the server's budget / keep-latest policy), as
counted by this subscriber, with the bridge's own counts beside them.

Writes ``benchmarks/results/ros.json`` and ``ros.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import command_line
from benchmarks.stream_load import Server
from runtime.files import write_atomic, write_json_atomic
from runtime.frames import encode_image
from runtime.measure import machine, markdown_table, percentile, synthetic_frames, today

RESULTS = Path(__file__).resolve().parent / "results"
INPUTS = {  # kind -> (message published, bridge --encode)
    "compressed": ("compressed", "jpeg"),
    "image-jpeg": ("image", "jpeg"),
    "image-raw": ("image", "raw"),
}
# e2e = server + added; added = ros_in + grpc + publish + ros_out (see the docstring)
# over_grpc = added - grpc: what the bridge adds over a gRPC client streaming directly
PARTS = ("e2e", "server", "added", "over_grpc", "ros_in", "grpc", "publish", "ros_out")
DIRECT_PARTS = ("direct_server", "direct_added")
MD_COLUMNS = [
    ("input", "input"),
    ("transport", "transport"),
    ("executor", "executor"),
    ("bridge", "bridge at"),
    ("budget_ms", "budget ms"),
    ("streams", "streams"),
    ("fps_per_stream", "fps/stream"),
    ("sent", "sent"),
    ("answered", "answered"),
    ("drop_rate", "drop rate"),
    ("bridge_dropped", "bridge drops"),
    ("server_dropped", "server drops"),
    ("e2e_p50_ms", "e2e p50"),
    ("server_p50_ms", "server p50"),
    ("added_p50_ms", "added p50"),
    ("added_p90_ms", "added p90"),
    ("added_p99_ms", "added p99"),
    ("over_grpc_p50_ms", "over gRPC p50"),
    ("ros_in_p50_ms", "ROS in p50"),
    ("grpc_p50_ms", "gRPC p50"),
    ("publish_p50_ms", "publish p50"),
    ("ros_out_p50_ms", "ROS out p50"),
    ("direct_added_p50_ms", "direct client added p50"),
    ("direct_added_p90_ms", "direct p90"),
]
COUNTS = re.compile(
    r"(\S+): (\d+) received, (\d+) published, (\d+) dropped \(bridge (\d+), server (\d+)"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--model", type=Path, required=True, help="model to serve (.onnx)")
    p.add_argument("--scenarios", nargs="+", default=["1x30", "4x30"], help="NxFPS")
    p.add_argument("--inputs", nargs="+", choices=list(INPUTS), default=list(INPUTS))
    p.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds left out at the start")
    p.add_argument("--budget-ms", type=float, default=33.0, help="the server's frame budget")
    p.add_argument("--threads", type=int, default=None, help="model threads of the server")
    p.add_argument(
        "--executor",
        choices=("events", "single"),
        default="events",
        help="the bridge's rclpy executor (its --executor)",
    )
    p.add_argument(
        "--bridge-from",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="run the bridge from another checkout of this project (e.g. a git worktree of an "
        "older commit) for before/after rows",
    )
    p.add_argument(
        "--transport",
        choices=("tcp", "unix"),
        default="tcp",
        help="how the bridge and the direct clients reach the server: loopback TCP or a Unix "
        "domain socket",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--append",
        action="store_true",
        help="add the rows to ros.json (a row of the same settings is replaced), each row "
        "with its own command",
    )
    return p.parse_args(argv)


def use_own_ros_domain() -> None:
    """This process and its children: this machine only, on a domain of their own."""
    os.environ.update(
        ROS_DOMAIN_ID=str(random.randint(101, 200)),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOCALHOST_ONLY="1",
    )


def start_bridge(
    target: str,
    inputs: list[str],
    encode: str,
    trace: Path,
    executor: str = "events",
    bridge_from: Path | None = None,
) -> subprocess.Popen:
    """The bridge in a subprocess; ``bridge_from``: run the ``runtime`` of that checkout
    instead (an older version, for before/after rows; it gets no --executor flag)."""
    cmd = [sys.executable, "-m", "runtime.ros", "--server", target, "--encode", encode]
    env = None
    if bridge_from is None:
        cmd += ["--executor", executor]
    else:
        env = dict(os.environ, PYTHONPATH=str(bridge_from.resolve()))
    for topic in inputs:
        cmd += ["--input", topic]
    cmd += ["--trace", str(trace), "--stats-period", "0"]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def bridge_version(bridge_from: Path | None) -> str:
    """The commit the bridge runs from: this checkout's, or ``bridge_from``'s ("+changes"
    when its runtime/ has uncommitted changes)."""
    where = bridge_from or Path(__file__).resolve().parents[1]
    r = subprocess.run(
        ["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(where), "status", "--porcelain", "--", "runtime"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (r.stdout.strip() or "unknown") + ("+changes" if dirty else "")


def stop_bridge(bridge: subprocess.Popen) -> dict[str, dict[str, int]]:
    """SIGTERM the bridge; its final counts per topic."""
    bridge.terminate()
    log = bridge.communicate(timeout=30)[0]
    names = ("received", "published", "dropped", "bridge", "server")
    counts = {m[1]: dict(zip(names, map(int, m.groups()[1:]))) for m in COUNTS.finditer(log)}
    if not counts:
        raise SystemExit("the bridge printed no counts:\n" + log[-3000:])
    return counts


def latencies(arrivals, trace: Path, inputs: list[str], since_ns: int) -> dict[str, list[float]]:
    """e2e, server and added ms of the answered frames stamped after ``since_ns``."""
    traced = {}
    for line in trace.read_text().splitlines():
        r = json.loads(line)
        traced[(r["camera"], r["stamp_ns"])] = r
    out: dict[str, list[float]] = {k: [] for k in PARTS}
    for s, seen in enumerate(arrivals.by_stream):
        for stamp, arrival in seen.items():
            r = traced.get((inputs[s], stamp))
            if stamp < since_ns or r is None:
                continue
            e2e = (arrival - stamp) / 1e6
            grpc = (r["answered_ns"] - r["offered_ns"]) / 1e6
            parts = {
                "e2e": e2e,
                "server": r["server_total_ms"],
                "added": e2e - r["server_total_ms"],
                "over_grpc": e2e - grpc,
                "ros_in": (r["offered_ns"] - stamp) / 1e6,
                "grpc": grpc - r["server_total_ms"],
                "publish": (r["published_ns"] - r["answered_ns"]) / 1e6,
                "ros_out": (arrival - r["published_ns"]) / 1e6,
            }
            for k, v in parts.items():
                out[k].append(v)
    return out


def direct_latencies(results, since_ns: int) -> dict[str, list[float]]:
    """The direct clients' answered frames offered after ``since_ns``: the server's total
    ms and what the client added (answer read - offered - server total), ms."""
    out: dict[str, list[float]] = {k: [] for k in DIRECT_PARTS}
    for r in results:
        for offered, answered, server in zip(r.offered_ns, r.answered_ns, r.server_ms):
            if offered >= since_ns:
                out["direct_server"].append(server)
                out["direct_added"].append((answered - offered) / 1e6 - server)
    return out


def run_scenario(args, kind: str, streams: int, fps: float, frames, images) -> dict:
    from benchmarks.ros_load import drive, drive_direct

    msg_kind, encode = INPUTS[kind]
    suffix = "/compressed" if msg_kind == "compressed" else ""
    inputs = [f"/bench/camera{s}/image{suffix}" for s in range(streams)]
    outputs = [f"{t}/detections" for t in inputs] if streams > 1 else ["/detections"]
    serve = ["--model", str(args.model), "--budget-ms", str(args.budget_ms)]
    serve += ["--threads", str(args.threads)] if args.threads else []
    with tempfile.TemporaryDirectory() as tmp:
        socket = Path(tmp) / "serve.sock"
        server = Server(
            serve + (["--unix-socket", str(socket)] if args.transport == "unix" else [])
        )
        target = f"unix:{socket}" if args.transport == "unix" else server.target
        trace = Path(tmp) / "trace.jsonl"
        bridge = start_bridge(target, inputs, encode, trace, args.executor, args.bridge_from)
        try:
            t0 = time.time_ns()
            arrivals = drive(inputs, outputs, msg_kind, frames, images, fps, args.duration)
        finally:
            counts = stop_bridge(bridge)
        try:
            t1 = time.time_ns()
            direct = drive_direct(target, frames, streams, fps, args.duration)
        finally:
            server.stop()
        lat = latencies(arrivals, trace, inputs, t0 + int(args.warmup * 1e9))
        lat.update(direct_latencies(direct, t1 + int(args.warmup * 1e9)))
    sent, answered = sum(arrivals.sent), sum(len(s) for s in arrivals.by_stream)
    row = {
        "input": kind,
        "streams": streams,
        "fps_per_stream": fps,
        "budget_ms": args.budget_ms,
        "transport": args.transport,
        "executor": "single" if args.bridge_from else args.executor,
        "bridge": bridge_version(args.bridge_from),
        "sent": sent,
        "answered": answered,
        "drop_rate": round(1 - answered / sent, 4) if sent else 0.0,
        "bridge_dropped": sum(c["bridge"] for c in counts.values()),
        "server_dropped": sum(c["server"] for c in counts.values()),
        "bridge_received": sum(c["received"] for c in counts.values()),
        "measured": len(lat["added"]),
        "direct_sent": sum(r.sent for r in direct),
        "direct_answered": sum(len(r.answered_ns) for r in direct),
        "direct_measured": len(lat["direct_added"]),
    }
    for key, values in lat.items():
        for q in (50, 90, 99):
            row[f"{key}_p{q}_ms"] = round(percentile(values, q), 3) if values else None
    return row


ROW_KEY = (
    "budget_ms",
    "input",
    "streams",
    "fps_per_stream",
    "transport",
    "executor",
    "model",
    "threads",
    "bridge",
)


def merge_rows(rows: list[dict], row: dict) -> list[dict]:
    """``rows`` with ``row`` added last, replacing a row of the same settings (``ROW_KEY``)."""
    key = [row.get(k) for k in ROW_KEY]
    return [r for r in rows if [r.get(k) for k in ROW_KEY] != key] + [row]


def write_results(out: Path, rows: list[dict], machine_line: str) -> None:
    """ros.json and ros.md; each row carries its own command, date and load average."""
    write_json_atomic(out / "ros.json", {"machine": machine_line, "rows": rows}, indent=2)
    commands = list(dict.fromkeys(r["command"] for r in rows))
    lines = [
        "# ROS 2 bridge: latency added between a camera topic and its Detection2DArray",
        "",
        f"Machine: {machine_line}",
        "",
        "Commands (row `run` = the command's number; its date and load average at start):",
        "",
        *(
            f"{i}. `{c}` ({r['date']}, load {r['load_avg_start']})"
            for i, c in enumerate(commands, 1)
            for r in [next(x for x in rows if x["command"] == c)]
        ),
        "",
        "added = (Detection2DArray arrival - header stamp) - the server's total time for the "
        "frame; arrival = the subscriber's callback gets the serialized message. All times in "
        "ms, medians and percentiles over the answered frames after the warm-up. Drops: "
        "frames published that got no Detection2DArray. direct client added: on the same "
        "server, the same frames streamed by a gRPC client without ROS (answer read - frame "
        "offered - the server's total time), the floor of the gRPC part.",
        "",
        *markdown_table(
            [{**r, "run": commands.index(r["command"]) + 1} for r in rows],
            [("run", "run"), *MD_COLUMNS],
        ),
        "",
    ]
    write_atomic(out / "ros.md", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"--model {args.model}: file not found")
    use_own_ros_domain()
    load = round(os.getloadavg()[0], 2)
    command = command_line("ros", argv, python=".side-envs/ros/venv/bin/python")
    images = synthetic_frames(640, 480, 30)
    frames = [encode_image(img, "jpeg", 90) for img in images]
    path = args.out / "ros.json"
    rows = json.loads(path.read_text())["rows"] if args.append and path.is_file() else []
    for kind in args.inputs:
        for scenario in args.scenarios:
            n, f = scenario.lower().split("x")
            row = run_scenario(args, kind, int(n), float(f), frames, images)
            row.update(command=command, date=today(), load_avg_start=load)
            row.update(model=str(args.model), threads=args.threads)
            print(json.dumps(row), flush=True)
            rows = merge_rows(rows, row)
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, rows, machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
