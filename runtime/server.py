"""The gRPC server: construction, health, reflection, metrics, TLS, auth, shutdown.

``build_server(detector, config)`` starts listening at once with ``grpc.health.v1``
reporting NOT_SERVING, loads (when given a factory) and warms up the model on a
background thread, measures its latency, then switches health to SERVING. Use
``RunningServer.wait_ready()`` to wait for that and ``RunningServer.stop(grace)`` to shut
down gracefully. ``run_until_signal`` is the ``understudy serve`` loop (SIGTERM/SIGINT ->
graceful stop, exit code 0).

Auth (:mod:`runtime.auth`): with a token, every call but ``grpc.health.v1.Health`` needs
``authorization: Bearer <token>`` metadata (reflection too), else UNAUTHENTICATED.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import runtime
from runtime.auth import HEALTH_SERVICE_NAME, TokenAuthInterceptor
from runtime.errors import ConfigError
from runtime.metrics import ServerMetrics
from runtime.proto import SERVICE_NAME, pb, pb_grpc
from runtime.scheduler import POLICIES, DetectorLike, Scheduler
from runtime.service import DetectorServicer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """Server settings (the ``understudy serve`` flags)."""

    host: str = "127.0.0.1"
    port: int = 50051  # 0 = pick a free port
    budget_ms: float = 33.0  # default budget for frames that send 0
    policy: str = "keep-latest"  # or "queue"
    queue_size: int = 4  # per stream, policy "queue"
    max_batch: int = 1  # micro-batch across streams when the model takes batch > 1
    max_wait_ms: float = 2.0  # how long the worker waits to fill a micro-batch
    predict_drops: bool = True  # drop frames that would miss their budget (see scheduler)
    metrics_port: int | None = None  # None = no metrics endpoint, 0 = pick a free port
    max_message_mb: float = 16.0
    max_pixels: int = 4096 * 4096
    max_streams: int = 16
    max_outstanding: int = 32  # frames per stream read but not yet answered
    reduced_decode: bool = False  # decode large JPEGs at 1/2..1/8 scale (see runtime.frames)
    unary_workers: int = 8  # threads for unary calls (Detect, GetModelInfo, reflection)
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None
    warmup_runs: int = 3
    latency_probe_runs: int = 20
    teacher_latency_ms: float | None = None
    extra_options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def validate(self) -> None:
        checks = [
            (self.policy in POLICIES, f"--policy must be one of {POLICIES}, got {self.policy!r}"),
            (self.budget_ms > 0, f"--budget-ms must be > 0, got {self.budget_ms}"),
            (self.queue_size >= 1, f"--queue-size must be >= 1, got {self.queue_size}"),
            (self.max_batch >= 1, f"--max-batch must be >= 1, got {self.max_batch}"),
            (self.max_wait_ms >= 0, f"--max-wait-ms must be >= 0, got {self.max_wait_ms}"),
            (self.max_message_mb > 0, f"--max-message-mb must be > 0, got {self.max_message_mb}"),
            (self.max_pixels > 0, f"--max-pixels must be > 0, got {self.max_pixels}"),
            (self.max_streams >= 1, f"--max-streams must be >= 1, got {self.max_streams}"),
            (0 <= self.port < 65536, f"--port must be in 0..65535, got {self.port}"),
            (
                (self.tls_cert is None) == (self.tls_key is None),
                "--tls-cert and --tls-key must be given together",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot be read ({e.strerror})") from e


class RunningServer:
    """A started server; see :func:`build_server`."""

    def __init__(
        self,
        server: grpc.Server,
        port: int,
        config: ServerConfig,
        servicer: DetectorServicer,
        health_servicer: health.HealthServicer,
        metrics: ServerMetrics,
        metrics_port: int | None,
    ) -> None:
        self.server = server
        self.port = port
        self.config = config
        self.servicer = servicer
        self.health = health_servicer
        self.metrics = metrics
        self.metrics_port = metrics_port
        self.detector: DetectorLike | None = None
        self.scheduler: Scheduler | None = None
        self.model_info: pb.ModelInfo | None = None
        self.load_error: BaseException | None = None
        self._owns_detector = False
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def target(self) -> str:
        return f"{self.config.host}:{self.port}"

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the model is warm (True) or ``timeout`` passes (False); re-raises a
        model-loading error."""
        done = self._ready.wait(timeout)
        if self.load_error is not None:
            raise self.load_error
        return done and self.scheduler is not None

    def _load(self, source: DetectorLike | Callable[[], DetectorLike]) -> None:
        try:
            if hasattr(source, "detect"):
                detector = source
            else:
                detector = source()
                self._owns_detector = True
            self.detector = detector
            detector.warmup(self.config.warmup_runs)
            p50, p99 = _probe_latency(detector, self.config.latency_probe_runs)
            scheduler = Scheduler(
                detector,
                policy=self.config.policy,
                queue_size=self.config.queue_size,
                max_batch=self.config.max_batch,
                max_wait_ms=self.config.max_wait_ms,
                predict_drops=self.config.predict_drops,
                on_batch=self.metrics.batch_size.observe,
            )
            scheduler.set_service_estimate(p50)
            info = _model_info(detector, self.config, scheduler, p50, p99)
            with self._stop_lock:
                if self._stopped.is_set():  # stopped while loading: stop() closes it
                    return
                scheduler.start()
                self.scheduler, self.model_info = scheduler, info
                self.servicer.attach(scheduler, tuple(detector.spec.class_names), info)
                for name in ("", SERVICE_NAME):
                    self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
                self.metrics.model_ready.set(1)
            log.info("model ready: %s p50 %.1f ms p99 %.1f ms", info.backend, p50, p99)
        except BaseException as e:
            log.error("model failed to load: %s", e)
            self.load_error = e
        finally:
            self._ready.set()

    def stop(self, grace: float = 5.0) -> None:
        """Graceful stop: health NOT_SERVING, refuse new calls, drop waiting frames with
        SHUTTING_DOWN notices, let the running batch finish and open streams end, then
        stop gRPC (cancelling what is left after ``grace`` seconds). Idempotent."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.metrics.model_ready.set(0)
        self.servicer.begin_shutdown()
        self.server.stop(grace).wait(grace + 1.0)
        idle = self.scheduler is None or self.scheduler.join(timeout=grace + 1.0)
        if not idle:
            log.warning("the model worker did not finish within %.1f s", grace + 1.0)
        # a model still loading/warming up is closed once the loader lets go of it
        idle = self._ready.wait(grace + 1.0) and idle
        if idle and self._owns_detector and self.detector is not None:
            self.detector.close()
        self.metrics.stop_http()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


def _probe_latency(detector: DetectorLike, runs: int) -> tuple[float, float]:
    """Median and p99 ``total_ms`` of ``runs`` detections on a 640x480 test image."""
    if runs <= 0:
        return 0.0, 0.0
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    totals = [detector.detect(image)[1].total_ms for _ in range(runs)]
    return float(np.percentile(totals, 50)), float(np.percentile(totals, 99))


def _model_info(
    detector: DetectorLike, config: ServerConfig, scheduler: Scheduler, p50: float, p99: float
) -> pb.ModelInfo:
    spec = detector.spec
    met = p99 <= config.budget_ms
    info = pb.ModelInfo(
        class_names=list(spec.class_names),
        input_height=int(spec.input_size[0]),
        input_width=int(spec.input_size[1]),
        backend=str(detector.backend_name),
        precision=str(detector.precision),
        model_hash=str(spec.model_hash),
        student_latency_p50_ms=p50,
        student_latency_p99_ms=p99,
        default_budget_ms=config.budget_ms,
        budget_met=met,
        budget_report=(
            f"student p99 {p99:.2f} ms {'<=' if met else '>'} budget {config.budget_ms:g} ms "
            f"(p50 {p50:.2f} ms, {config.latency_probe_runs} frames at 640x480 after warm-up)"
        ),
        max_batch=scheduler.max_batch,
        preset=str(getattr(spec, "preset", "")),
        server_version=runtime.__version__,
        policy=config.policy,
    )
    teacher = config.teacher_latency_ms
    if teacher is None:
        teacher = (getattr(spec, "extra", None) or {}).get("teacher_latency_ms")
    if teacher:
        info.teacher_latency_ms = float(teacher)
    return info


def build_server(
    detector: DetectorLike | Callable[[], DetectorLike], config: ServerConfig
) -> RunningServer:
    """Start a server for ``detector`` (an object with the ``runtime.pipeline.Detector``
    API, or a zero-argument factory that loads one; the server closes what it loaded).

    Returns at once, listening with health NOT_SERVING; the model warms up in the
    background (``RunningServer.wait_ready``). Raises ConfigError for bad settings, an
    unreadable TLS file or a port that cannot be bound.
    """
    config.validate()
    metrics = ServerMetrics()
    servicer = DetectorServicer(
        metrics,
        default_budget_ms=config.budget_ms,
        max_pixels=config.max_pixels,
        max_streams=config.max_streams,
        max_outstanding=config.max_outstanding,
        reduced_decode=config.reduced_decode,
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    token = config.token
    interceptors = [TokenAuthInterceptor(token)] if token else []
    max_bytes = int(config.max_message_mb * 1024 * 1024)
    workers = config.max_streams + config.unary_workers + 4
    options = [
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.max_send_message_length", max_bytes),
        ("grpc.so_reuseport", 0),
        *config.extra_options,
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="understudy-rpc"),
        interceptors=interceptors,
        options=options,
        maximum_concurrent_rpcs=workers,
    )
    pb_grpc.add_DetectorServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{config.host}:{config.port}"
    try:
        if config.tls_cert:
            creds = grpc.ssl_server_credentials(
                [
                    (
                        _read_file(config.tls_key, "--tls-key"),
                        _read_file(config.tls_cert, "--tls-cert"),
                    )
                ]
            )
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as e:
        raise ConfigError(f"cannot listen on {address} ({e}); is the port in use?") from e
    if port == 0:
        raise ConfigError(f"cannot listen on {address}; is the port in use?")
    if token and not config.tls_cert and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "a bearer token over plain TCP on %s can be sniffed; add --tls-cert/--tls-key", address
        )
    server.start()
    metrics_port = None
    if config.metrics_port is not None:
        try:
            metrics_port = metrics.serve_http(config.metrics_port, config.host)
        except OSError as e:
            server.stop(None)
            raise ConfigError(f"cannot serve metrics on port {config.metrics_port}: {e}") from e
    running = RunningServer(server, port, config, servicer, health_servicer, metrics, metrics_port)
    threading.Thread(
        target=running._load, args=(detector,), name="understudy-load", daemon=True
    ).start()
    return running


def run_until_signal(
    detector: DetectorLike | Callable[[], DetectorLike], config: ServerConfig, grace: float = 5.0
) -> int:
    """Serve until SIGTERM/SIGINT, then stop gracefully and return 0 (main thread only).

    Prints ``listening on HOST:PORT`` and ``ready`` lines on stdout for scripts.
    """
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            log.warning("second signal: exiting without waiting")
            os._exit(1)
        log.info("signal %d: shutting down", signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        running = build_server(detector, config)
        print(f"understudy serve: listening on {running.target}", flush=True)
        if running.metrics_port is not None:
            print(
                f"understudy serve: metrics on http://{config.host}:{running.metrics_port}/metrics",
                flush=True,
            )
        try:
            while not running.wait_ready(timeout=0.2):
                if stop.is_set():
                    break
            if not stop.is_set():
                print(f"understudy serve: ready ({running.model_info.backend})", flush=True)
            stop.wait()
        finally:
            running.stop(grace)
        print("understudy serve: stopped", flush=True)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
