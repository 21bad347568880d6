"""``understudy serve``: serve a model over gRPC (understudy.v1.Detector, the KServe v2 /
Triton inference.GRPCInferenceService, health, reflection, optional Prometheus metrics,
TLS and bearer token), optionally checking a budget file at start-up (``--budget``) and
checking the student against a shadow teacher (``--shadow-teacher``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

TOKEN_ENV = "UNDERSTUDY_TOKEN"
HOST_ENV, PORT_ENV = "UNDERSTUDY_HOST", "UNDERSTUDY_PORT"  # defaults of --host/--port
DEFAULT_BUDGET_MS = 33.0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a model over gRPC with latency budgets",
        description="Serve a detector over gRPC (understudy.v1.Detector, the KServe v2 / Triton "
        "inference.GRPCInferenceService, grpc.health.v1, reflection). Health says NOT_SERVING "
        "until the model is warm. SIGTERM/SIGINT stop gracefully. See docs/protocol.md.",
    )
    _address_options(p)
    _budget_options(p)
    _scheduling_options(p)
    _limit_options(p)
    _security_options(p)
    _model_options(p)
    _shadow_options(p)
    p.set_defaults(func=run)


def _address_options(p: argparse.ArgumentParser) -> None:
    """The model file and where to listen."""
    p.add_argument("--model", required=True, help="model file (.onnx, .engine, .pt)")
    p.add_argument(
        "--host",
        default=os.environ.get(HOST_ENV, "127.0.0.1"),
        help=f"address to bind (0.0.0.0 = all; default ${HOST_ENV} or 127.0.0.1)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=os.environ.get(PORT_ENV, "50051"),
        help=f"gRPC port (0 = pick a free one; default ${PORT_ENV} or 50051)",
    )
    p.add_argument(
        "--unix-socket",
        default=None,
        metavar="PATH",
        help="also listen on this Unix domain socket (clients on this machine dial "
        "unix:PATH, a little faster than loopback TCP); a stale socket file there is replaced",
    )


def _budget_options(p: argparse.ArgumentParser) -> None:
    """Latency budgets: the default per frame, the budget file checked at start-up."""
    p.add_argument(
        "--budget-ms",
        type=float,
        default=None,
        help="default latency budget for frames that send 0 (default: the --budget file's "
        f"latency.p99_ms, else {DEFAULT_BUDGET_MS:g})",
    )
    p.add_argument(
        "--budget",
        default=None,
        metavar="BUDGET_YAML",
        help="budget file checked once the model is warm (latency, input size, memory); "
        "the result is logged, in GetModelInfo and in the health of "
        "'understudy.v1.Detector/budget'",
    )
    p.add_argument(
        "--strict-budget",
        action="store_true",
        help="refuse to serve (exit 1) when the --budget check fails",
    )


def _scheduling_options(p: argparse.ArgumentParser) -> None:
    """What the scheduler does with frames while the model is busy."""
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
        "--reply-margin-ms",
        type=float,
        default=2.0,
        help="of each frame's budget, the time kept for the answer's way back to the client: "
        "frames that cannot be answered by budget - margin are dropped",
    )
    p.add_argument(
        "--deadline-from",
        choices=("jitter", "arrival", "capture"),
        default="jitter",
        help="when a frame's budget starts: jitter (default) = its arrival, moved back by "
        "how much later it arrived than the quickest of its stream's last 64 frames (read "
        "off capture_time, so the clocks' offset does not matter; unary calls and frames "
        "without a capture time: arrival); arrival; or capture = its capture_time (needs "
        "the client's and the server's clocks synchronized, e.g. by PTP/NTP; frames whose "
        "capture time is in the future or over 10 s old fall back to arrival)",
    )
    p.add_argument(
        "--service-quantile",
        type=float,
        default=0.99,
        help="quantile of the model-call times of the last 2 s "
        "taken as a frame's expected processing time when predicting budget misses "
        "(higher: fewer late answers, more drops)",
    )
    p.add_argument(
        "--schedule",
        choices=("deficit", "edf", "arrival"),
        default="deficit",
        help="which stream the model serves next under overload: deficit (the stream served "
        "least for its weight; frames' priority sets the weight), edf (earliest deadline "
        "that can still be met) or arrival (the order frames arrived; for comparison)",
    )


def _limit_options(p: argparse.ArgumentParser) -> None:
    """Metrics, decoding and the limits on what a client may send."""
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port (0 = pick a free one)",
    )
    p.add_argument(
        "--decode",
        choices=("reduced", "full"),
        default="reduced",
        help="reduced: JPEG frames >= 2x the model input are decoded at 1/2, 1/4 or 1/8 scale "
        "by libjpeg's DCT scaling (faster; benchmarks/results/decode.md measures the effect on "
        "detections); full: decode every frame in full, then resize",
    )
    p.add_argument("--max-message-mb", type=float, default=16.0, help="largest gRPC message")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=4096 * 4096,
        help="largest image (width x height) accepted",
    )
    p.add_argument("--max-streams", type=int, default=16, help="concurrent StreamDetect calls")


def _security_options(p: argparse.ArgumentParser) -> None:
    """TLS and the bearer token."""
    p.add_argument("--tls-cert", default=None, help="PEM certificate chain (enables TLS)")
    p.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    p.add_argument(
        "--token",
        default=None,
        help=f"require 'authorization: Bearer TOKEN' (default: ${TOKEN_ENV}; "
        "prefer the variable, a command line is visible to other users)",
    )


def _model_options(p: argparse.ArgumentParser) -> None:
    """How the model runs, what it reports and how the server stops."""
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="model intra-op threads (default: the cores but one, at least 1, leaving a core "
        "to decoding and gRPC; 0 = the backend's own default)",
    )
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
    p.add_argument(
        "--model-name",
        default=None,
        help="the model's name for KServe v2 / Triton clients (default: its preset, else "
        "'understudy'); the network alone is served as NAME_raw",
    )


def _shadow_options(p: argparse.ArgumentParser) -> None:
    """The shadow teacher."""
    s = p.add_argument_group("shadow teacher (off the hot path; see docs/protocol.md)")
    s.add_argument(
        "--shadow-teacher",
        default=None,
        metavar="MODEL",
        help="teacher model run on a sample of answered frames by a low-priority thread; "
        "the student's precision/recall against it go to metrics and GetModelInfo",
    )
    s.add_argument(
        "--shadow-every", type=int, default=None, help="offer every N-th answered frame (10)"
    )
    s.add_argument(
        "--shadow-save-dir",
        default=None,
        help="save frames where student and teacher disagree (JPEG + JSON) here",
    )
    s.add_argument(
        "--shadow-save-max-mb",
        type=float,
        default=None,
        help="cap of the save folder; the oldest frames are deleted first (500)",
    )
    s.add_argument(
        "--shadow-save-below-f1",
        type=float,
        default=None,
        help="save frames whose student-vs-teacher F1 is below this (0.5)",
    )


def _shadow(args: argparse.Namespace) -> tuple[Any, Any]:
    """(ShadowConfig, teacher factory), or (None, None) without --shadow-teacher."""
    from runtime.errors import ConfigError, ModelFileError
    from runtime.server_config import ShadowConfig

    options = {
        "every": args.shadow_every,
        "save_dir": args.shadow_save_dir,
        "save_max_mb": args.shadow_save_max_mb,
        "save_below_f1": args.shadow_save_below_f1,
    }
    given = {k: v for k, v in options.items() if v is not None}
    if args.shadow_teacher is None:
        if given:
            flags = ", ".join("--shadow-" + k.replace("_", "-") for k in given)
            raise ConfigError(f"{flags} need --shadow-teacher MODEL")
        return None, None
    teacher = Path(args.shadow_teacher)
    if not teacher.exists():
        raise ModelFileError(f"--shadow-teacher {teacher}: file not found")
    config = ShadowConfig(teacher=teacher.name, **given)
    config.validate()

    def load_teacher() -> Any:  # runs on the shadow worker thread (nice 19)
        from runtime.pipeline import Detector

        return Detector(
            teacher,
            threads=1,
            score_threshold=args.score_threshold,
            iou_threshold=args.iou_threshold,
        )

    return config, load_teacher


def server_config(args: argparse.Namespace) -> tuple[Any, Any]:
    """(ServerConfig, shadow teacher factory or None) from the parsed flags; raises
    ConfigError/ModelFileError for bad ones (nothing is loaded yet)."""
    from runtime.budget import load_budget
    from runtime.errors import ConfigError
    from runtime.server_config import ServerConfig

    if args.strict_budget and args.budget is None:
        raise ConfigError("--strict-budget needs --budget BUDGET_YAML")
    budget = load_budget(args.budget) if args.budget is not None else None
    budget_ms = args.budget_ms
    if budget_ms is None:
        budget_ms = (budget and budget.latency.p99_ms) or DEFAULT_BUDGET_MS
    shadow, load_teacher = _shadow(args)
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    config = ServerConfig(
        host=args.host,
        unix_socket=args.unix_socket,
        port=args.port,
        budget_ms=budget_ms,
        policy=args.policy,
        queue_size=args.queue_size,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        predict_drops=not args.no_predict_drops,
        reply_margin_ms=args.reply_margin_ms,
        service_quantile=args.service_quantile,
        schedule=args.schedule,
        deadline_from=args.deadline_from,
        metrics_port=args.metrics_port,
        max_message_mb=args.max_message_mb,
        max_pixels=args.max_pixels,
        max_streams=args.max_streams,
        reduced_decode=args.decode == "reduced",
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=token,
        teacher_latency_ms=args.teacher_latency_ms,
        budget=budget,
        budget_source=str(args.budget or "budget"),
        strict_budget=args.strict_budget,
        shadow=shadow,
        model_name=args.model_name,
    )
    config.validate()
    return config, load_teacher


def model_threads(args: argparse.Namespace) -> int | None:
    """The model's intra-op threads: ``--threads``, else the cores this process may use but
    one (at least 1); 0 means the backend's own default (None).

    Why not all cores: a server is more than its model. JPEG decoding, gRPC and the Python
    threads that feed the model need CPU at the same moments, and ONNX Runtime's spinning
    worker threads would take it from them; on a 2-core CPU under 4 x 30 FPS the model was
    no faster with two threads than with one, while decoding and replies waited
    (benchmarks/results/stream_2026-11-28.md; benchmarks/results/stream.md, rows by threads)."""
    if args.threads is not None:
        return args.threads or None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) - 1)


def run(args: argparse.Namespace) -> int:
    from runtime.errors import ModelFileError
    from runtime.server import run_until_signal

    model = Path(args.model)
    if not model.exists():
        raise ModelFileError(f"--model {model}: file not found")
    config, load_teacher = server_config(args)

    def load():  # runs on the server's loader thread
        from runtime.pipeline import Detector

        return Detector(
            model,
            backend=args.backend,
            threads=model_threads(args),
            score_threshold=args.score_threshold,
            iou_threshold=args.iou_threshold,
            max_batch=args.max_batch,
        )

    return run_until_signal(load, config, grace=args.grace, shadow_teacher=load_teacher)
