"""KServe v2 / Triton path beside understudy.v1: one model, one frame, one server, one run.

    python -m benchmarks.kserve [--model M.onnx] [--size 640x480] [--pairs 300]
        [--concurrency 1 2 4] [--modes sync async streaming] [--threads 1]

One ``understudy serve`` runs in another process (``--threads`` model threads, a default
budget of ``--budget-ms``, generous so that no request is dropped: drops are counted from
its metrics and reported). Three parts, all against that server:

1. **Overhead** (the target): a gRPC client in this process sends the same frame
   alternately as understudy.v1 ``Detect`` and as KServe ``ModelInfer`` (order swapped
   every pair), ``--pairs`` times, once as an encoded JPEG (``Frame.encoded`` vs
   ``IMAGE``) and once as raw BGR pixels (``Frame.raw`` vs ``FRAME``). Per kind: median
   round trip of each protocol, their difference and the median of the paired
   differences. Target: the KServe path adds at most 0.5 ms median over Detect.
2. **perf_analyzer** (tritonclient 2.41.0's, from ``.side-envs/triton``): sync, async
   and ``--streaming`` at each ``--concurrency`` against ``<name>`` (IMAGE: the JPEG) and
   ``<name>_raw`` (random input tensor): throughput, p50/p90/p99 and the server-side
   times perf_analyzer reads from ModelStatistics.
3. **understudy.v1 stream**: one camera at 30 FPS over StreamDetect (the stream
   benchmark's client, ``benchmarks.stream_load``) with a 33 ms budget, for the same model
   and frame.

Without ``--model`` an untrained ``nano`` at 320x320 (dynamic batch) is exported first
(needs the ``train`` extra): its latency is that of a trained one, its detections are not.
Writes ``benchmarks/results/kserve.json`` (format: ``benchmarks/README.md``) and ``kserve.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import grpc
import numpy as np
from tqdm import tqdm

from benchmarks.common import command_line, parse_size
from benchmarks.kserve_perf import (
    MODES,
    image_input_data,
    perf_command,
    prepare_side_env,
    run_perf,
)
from benchmarks.stream_load import Server, bench_frames, run_streams
from runtime.files import write_atomic, write_json_atomic
from runtime.kserve.tensors import encode_bytes_elements
from runtime.measure import machine, markdown_table, today
from runtime.proto import pb, pb_grpc
from runtime.proto.inference import grpc_service_pb2 as kpb
from runtime.proto.inference import grpc_service_pb2_grpc as kpb_grpc
from runtime.stream_stats import StreamStats

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_ADDED_MS = 0.5


def default_model(folder: Path) -> Path:
    """An untrained nano at 320x320 with a dynamic batch axis, exported to ONNX."""
    import torch

    from distill.checkpoint import make_checkpoint, save_atomic
    from distill.export import export_onnx
    from distill.models.presets import PRESETS, build_detector

    torch.manual_seed(0)
    names = tuple(f"class{i}" for i in range(8))
    model = build_detector(PRESETS["nano"], len(names))
    ckpt = make_checkpoint(
        model, preset="nano", scale=PRESETS["nano"], class_names=names, img_size=320
    )
    pt = save_atomic(ckpt, folder / "nano.pt")
    return export_onnx(pt, folder / "nano.onnx", dynamic_batch=True, validate=False).path


def _requests(name: str, jpeg: bytes, bgr: np.ndarray) -> dict[str, tuple]:
    """Per frame kind: (understudy.v1 Frame, KServe ModelInferRequest) of the same frame."""
    h, w = bgr.shape[:2]
    image = kpb.ModelInferRequest(model_name=name)
    image.inputs.add(name="IMAGE", datatype="BYTES", shape=[1])
    image.raw_input_contents.append(encode_bytes_elements([jpeg]))
    frame = kpb.ModelInferRequest(model_name=name)
    frame.inputs.add(name="FRAME", datatype="UINT8", shape=[h, w, 3])
    frame.raw_input_contents.append(bgr.tobytes())
    encoded = pb.Frame(encoded=pb.EncodedImage(data=jpeg, format=pb.IMAGE_FORMAT_JPEG))
    raw = pb.Frame(
        raw=pb.RawImage(data=bgr.tobytes(), width=w, height=h, pixel_format=pb.PIXEL_FORMAT_BGR8)
    )
    return {"jpeg": (encoded, image), "raw_bgr": (raw, frame)}


def overhead_rows(target: str, name: str, jpeg: bytes, pairs: int) -> list[dict]:
    """Part 1: Detect vs ModelInfer round trips for the same frame (module docstring)."""
    options = [
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20),
    ]
    channel = grpc.insecure_channel(target, options=options)
    detect = pb_grpc.DetectorStub(channel).Detect
    infer = kpb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    rows = []
    for kind, (frame, request) in _requests(name, jpeg, bgr).items():
        calls = {
            "understudy.v1 Detect": lambda f=frame: detect(f),
            "KServe ModelInfer": lambda r=request: infer(r),
        }
        for call in calls.values():
            for _ in range(20):  # warm up both paths
                call()
        times: dict[str, list[float]] = {k: [] for k in calls}
        order = list(calls)
        for i in tqdm(range(pairs), desc=f"overhead {kind}", unit="pair", leave=False):
            for key in order if i % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                calls[key]()
                times[key].append((time.perf_counter() - t0) * 1000.0)
        v1, ks = times["understudy.v1 Detect"], times["KServe ModelInfer"]
        added = round(statistics.median(ks) - statistics.median(v1), 3)
        rows.append(
            {
                "part": "overhead",
                "frame": kind,
                "pairs": pairs,
                "detect_p50_ms": round(statistics.median(v1), 3),
                "kserve_p50_ms": round(statistics.median(ks), 3),
                "detect_p90_ms": round(float(np.percentile(v1, 90)), 3),
                "kserve_p90_ms": round(float(np.percentile(ks, 90)), 3),
                "added_p50_ms": added,
                "paired_added_p50_ms": round(statistics.median(np.subtract(ks, v1)), 3),
                "target_added_ms": TARGET_ADDED_MS,
                "target_met": added <= TARGET_ADDED_MS,
            }
        )
    channel.close()
    return rows


def perf_rows(
    args: argparse.Namespace, target: str, name: str, jpeg: bytes, tmp: Path
) -> list[dict]:
    """Part 2: perf_analyzer, every mode x concurrency x model."""
    env = prepare_side_env()
    image_data = image_input_data(jpeg, tmp / "image.json")
    models = {name: ["--input-data", str(image_data)], f"{name}_raw": []}
    runs = [(m, mode, c) for m in models for mode in args.modes for c in args.concurrency]
    rows = []
    for i, (model, mode, c) in enumerate(tqdm(runs, desc="perf_analyzer", unit="run")):
        cmd = perf_command(model, target, mode, c, args.measurement_ms, models[model])
        row = {"part": "perf_analyzer", "model": model, "mode": mode, "concurrency": c}
        row.update(run_perf(cmd, tmp / f"perf{i}.csv", env))
        tqdm.write(
            str(
                {
                    k: row.get(k)
                    for k in ("model", "mode", "concurrency", "throughput_fps", "p50_ms", "error")
                }
            )
        )
        rows.append(row)
    return rows


def stream_row(target: str, jpeg: bytes, duration: float) -> dict:
    """Part 3: one understudy.v1 camera stream at 30 FPS, 33 ms budget."""
    results, _t0, elapsed = run_streams(target, [jpeg], 1, 30.0, duration, 33.0)
    total = StreamStats()
    for r in results:
        total.merge(r.stats)
    s = total.summary(sent=sum(r.sent for r in results), elapsed_s=elapsed)
    keys = ("delivered_fps", "drop_rate", "e2e_p50_ms", "e2e_p90_ms", "e2e_p99_ms", "infer_p50_ms")
    keys += ("overhead_p50_ms", "server_overhead_p50_ms", "budget_miss_rate", "sent", "answered")
    return {
        "part": "stream",
        "streams": 1,
        "fps_per_stream": 30.0,
        "budget_ms": 33.0,
        **{k: s[k] for k in keys},
    }


def dropped_total(metrics_url: str | None) -> float | None:
    """The server's understudy_frames_dropped_total, all reasons (None without metrics)."""
    if metrics_url is None:
        return None
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    return sum(
        float(v)
        for v in re.findall(r"^understudy_frames_dropped_total\{[^}]*\} (\S+)$", text, re.M)
    )


OVERHEAD_COLUMNS = [
    ("frame", "frame"),
    ("detect_p50_ms", "Detect p50"),
    ("kserve_p50_ms", "ModelInfer p50"),
    ("detect_p90_ms", "Detect p90"),
    ("kserve_p90_ms", "ModelInfer p90"),
    ("added_p50_ms", "added (p50 diff)"),
    ("paired_added_p50_ms", "added (paired p50)"),
    ("target_met", "<= 0.5 ms"),
]
PERF_COLUMNS = [
    ("model", "model"),
    ("mode", "mode"),
    ("concurrency", "concurrency"),
    ("throughput_fps", "infer/s"),
    ("p50_ms", "p50"),
    ("p90_ms", "p90"),
    ("p99_ms", "p99"),
    ("server_queue_ms", "server queue"),
    ("server_compute_input_ms", "compute input"),
    ("server_compute_infer_ms", "compute infer"),
    ("server_compute_output_ms", "compute output"),
    ("error", "error"),
]
STREAM_COLUMNS = [
    ("streams", "streams"),
    ("fps_per_stream", "fps/stream"),
    ("budget_ms", "budget ms"),
    ("delivered_fps", "delivered fps"),
    ("drop_rate", "drop rate"),
    ("e2e_p50_ms", "e2e p50"),
    ("e2e_p99_ms", "e2e p99"),
    ("infer_p50_ms", "infer p50"),
    ("server_overhead_p50_ms", "server overhead p50"),
]


def write_results(out_dir: Path, doc: dict) -> Path:
    """``kserve.json`` and the tables ``kserve.md`` beside it."""
    path = write_json_atomic(out_dir / "kserve.json", doc)
    rows = doc["rows"]

    def part(name: str) -> list[dict]:
        return [r for r in rows if r["part"] == name]

    lines = [
        f"# KServe v2 / Triton path vs understudy.v1 ({doc['date']})",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {doc['machine']}; load average at start: {doc['load_average_start']}",
        "",
        f"Model: {doc['model']} ({doc['model_note']}), served as `{doc['model_name']}` and "
        f"`{doc['model_name']}_raw` by `{doc['server_command']}`. Frame: {doc['frame']}. "
        f"Frames dropped by the server during the run: {doc['server_dropped']}.",
        "",
        "## Overhead: the same frame over understudy.v1 Detect and KServe ModelInfer",
        "",
        "Client round trips in ms, one Python gRPC client, calls alternating "
        f"({doc['rows'][0]['pairs'] if part('overhead') else 0} pairs per frame kind). "
        f"Target: the KServe path adds at most {TARGET_ADDED_MS} ms median: "
        f"**{'met' if doc['target_met'] else 'not met'}**.",
        "",
        *markdown_table(part("overhead"), OVERHEAD_COLUMNS),
        "",
        "## perf_analyzer (tritonclient 2.41.0)",
        "",
        "Latencies in ms (client side; server times from ModelStatistics, per request). "
        "Commands: each row's `command` in kserve.json.",
        "",
        *markdown_table(part("perf_analyzer"), PERF_COLUMNS),
        "",
        "## understudy.v1 StreamDetect, same model and frame",
        "",
        *markdown_table(part("stream"), STREAM_COLUMNS),
    ]
    write_atomic(path.with_suffix(".md"), "\n".join(lines) + "\n")
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.kserve", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--model", type=Path, default=None, help="ONNX model (default: an untrained nano)"
    )
    p.add_argument("--model-name", default="nano", help="the KServe model name (--model-name)")
    p.add_argument("--size", type=parse_size, default=(640, 480), help="frame WIDTHxHEIGHT")
    p.add_argument("--pairs", type=int, default=300, help="Detect/ModelInfer pairs per frame kind")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES))
    p.add_argument("--measurement-ms", type=int, default=2000, help="perf_analyzer window")
    p.add_argument("--stream-seconds", type=float, default=15.0)
    p.add_argument("--threads", type=int, default=1, help="the server's model threads")
    p.add_argument("--budget-ms", type=float, default=1000.0, help="the server's default budget")
    p.add_argument("--skip-perf", action="store_true", help="leave out perf_analyzer")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="understudy-kserve-"))
    model, note = args.model, "as given"
    if model is None:
        model, note = default_model(tmp), "untrained nano 320x320, exported by this benchmark"
    jpeg = bench_frames(*args.size, None, n=1)[0]
    serve = ["--model", str(model), "--model-name", args.model_name, "--threads", str(args.threads)]
    serve += ["--budget-ms", str(args.budget_ms), "--metrics-port", "0"]
    server = Server(serve)
    metrics = next((line.split()[-1] for line in server.log if "metrics on" in line), None)
    try:
        dropped_before = dropped_total(metrics)
        rows = overhead_rows(server.target, args.model_name, jpeg, args.pairs)
        if not args.skip_perf:
            rows += perf_rows(args, server.target, args.model_name, jpeg, tmp)
        dropped = dropped_total(metrics)
        rows.append(stream_row(server.target, jpeg, args.stream_seconds))
    finally:
        server.stop()
    doc = {
        "command": command_line("kserve", argv),
        "machine": machine(),
        "date": today(),
        "load_average_start": [round(v, 2) for v in load],
        "model": str(model) if args.model else "nano.onnx",
        "model_note": note,
        "model_name": args.model_name,
        "server_command": "understudy serve --port 0 "
        + " ".join(serve).replace(str(model), "MODEL"),
        "frame": f"{args.size[0]}x{args.size[1]} JPEG (quality 90), synthetic",
        "server_dropped": None if dropped is None else dropped - (dropped_before or 0.0),
        "target_added_ms": TARGET_ADDED_MS,
        "target_met": all(r["target_met"] for r in rows if r["part"] == "overhead"),
        "rows": rows,
    }
    path = write_results(args.out_dir, doc)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
