"""``understudy serve``: serve a model over gRPC (understudy.v1.Detector + health +
reflection, optional Prometheus metrics, TLS and bearer token)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

TOKEN_ENV = "UNDERSTUDY_TOKEN"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a model over gRPC with latency budgets",
        description="Serve a detector over gRPC (understudy.v1.Detector, grpc.health.v1, "
        "reflection). Health says NOT_SERVING until the model is warm. SIGTERM/SIGINT stop "
        "gracefully. See docs/protocol.md.",
    )
    p.add_argument("--model", required=True, help="model file (.onnx, .engine, .pt)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 = all)")
    p.add_argument("--port", type=int, default=50051, help="gRPC port (0 = pick a free one)")
    p.add_argument(
        "--budget-ms",
        type=float,
        default=33.0,
        help="default latency budget for frames that send 0",
    )
    p.add_argument(
        "--policy",
        choices=("keep-latest", "queue"),
        default="keep-latest",
        help="per-stream policy while the model is busy",
    )
    p.add_argument("--queue-size", type=int, default=4, help="per-stream queue (--policy queue)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=1,
        help="micro-batch frames across streams (needs a dynamic-batch model)",
    )
    p.add_argument(
        "--max-wait-ms", type=float, default=2.0, help="how long to wait to fill a micro-batch"
    )
    p.add_argument(
        "--no-predict-drops",
        action="store_true",
        help="drop only frames whose wait already exceeds the budget",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port (0 = pick a free one)",
    )
    p.add_argument(
        "--reduced-decode",
        action="store_true",
        help="decode JPEG frames >= 2x the model input at 1/2, 1/4 or 1/8 scale "
        "(libjpeg DCT scaling: faster, pixels differ slightly from a full decode + resize)",
    )
    p.add_argument("--max-message-mb", type=float, default=16.0, help="largest gRPC message")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=4096 * 4096,
        help="largest image (width x height) accepted",
    )
    p.add_argument("--max-streams", type=int, default=16, help="concurrent StreamDetect calls")
    p.add_argument("--tls-cert", default=None, help="PEM certificate chain (enables TLS)")
    p.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    p.add_argument(
        "--token",
        default=None,
        help=f"require 'authorization: Bearer TOKEN' (default: ${TOKEN_ENV}; "
        "prefer the variable, a command line is visible to other users)",
    )
    p.add_argument("--threads", type=int, default=None, help="model intra-op threads")
    p.add_argument("--backend", default=None, help="force a backend (onnxruntime, tensorrt, torch)")
    p.add_argument("--score-threshold", type=float, default=0.25)
    p.add_argument("--iou-threshold", type=float, default=0.45)
    p.add_argument(
        "--teacher-latency-ms",
        type=float,
        default=None,
        help="teacher latency to report in GetModelInfo",
    )
    p.add_argument("--grace", type=float, default=5.0, help="seconds to finish on shutdown")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from runtime.errors import ModelFileError
    from runtime.server import ServerConfig, run_until_signal

    model = Path(args.model)
    if not model.exists():
        raise ModelFileError(f"--model {model}: file not found")
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    config = ServerConfig(
        host=args.host,
        port=args.port,
        budget_ms=args.budget_ms,
        policy=args.policy,
        queue_size=args.queue_size,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        predict_drops=not args.no_predict_drops,
        metrics_port=args.metrics_port,
        max_message_mb=args.max_message_mb,
        max_pixels=args.max_pixels,
        max_streams=args.max_streams,
        reduced_decode=args.reduced_decode,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=token,
        teacher_latency_ms=args.teacher_latency_ms,
    )
    config.validate()

    def load():  # runs on the server's loader thread
        from runtime.pipeline import Detector

        return Detector(
            model,
            backend=args.backend,
            threads=args.threads,
            score_threshold=args.score_threshold,
            iou_threshold=args.iou_threshold,
            max_batch=args.max_batch,
        )

    return run_until_signal(load, config, grace=args.grace)
