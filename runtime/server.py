"""The gRPC server: construction, health, reflection, metrics, TLS, auth, shutdown.

``build_server(detector, config)`` starts listening at once with ``grpc.health.v1``
reporting NOT_SERVING, loads (when given a factory) and warms up the model on a
background thread, measures its latency, then switches health to SERVING. Use
``RunningServer.wait_ready()`` to wait for that and ``RunningServer.stop(grace)`` to shut
down gracefully. ``run_until_signal`` is the ``understudy serve`` loop (SIGTERM/SIGINT ->
graceful stop, exit code 0).

Budget (``config.budget``, ``understudy serve --budget FILE``): once the model is warm the
lines the server can measure are checked (:mod:`runtime.startup`). The result goes to the
log (one line), to ``GetModelInfo.budget_met``/``budget_report`` and to the health
status of the name ``understudy.v1.Detector/budget`` (SERVING = met, NOT_SERVING =
failed); the main health turns SERVING either way, unless ``strict_budget``: then a
failed budget keeps it NOT_SERVING, calls are refused (UNAVAILABLE) and
``run_until_signal`` returns 1.

Shadow teacher: ``build_server(..., shadow_teacher=...)``, see :mod:`runtime.shadow`.

KServe v2 / Triton (:mod:`runtime.kserve`): ``inference.GRPCInferenceService`` is served on
the same port, by the same scheduler, metrics, auth and TLS (``RunningServer.kserve``).

Auth (:mod:`runtime.auth`): with a token, every call but ``grpc.health.v1.Health`` needs
``authorization: Bearer <token>`` metadata (reflection too), else UNAUTHENTICATED.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from runtime.auth import HEALTH_SERVICE_NAME, TokenAuthInterceptor
from runtime.errors import ConfigError
from runtime.kserve.raw import RawTap
from runtime.kserve.service import KServeServicer
from runtime.kserve.service import add_to_server as add_kserve_to_server
from runtime.measure import rss_mb
from runtime.metrics import ServerMetrics
from runtime.proto import SERVICE_NAME, pb, pb_grpc
from runtime.scheduler import DetectorLike, Scheduler
from runtime.server_config import ServerConfig, ShadowConfig
from runtime.service import DetectorServicer
from runtime.shadow import ShadowTap, ShadowTeacher
from runtime.startup import StartupBudget, check_startup_budget, model_info, probe_latency

log = logging.getLogger(__name__)
BUDGET_HEALTH_NAME = f"{SERVICE_NAME}/budget"
__all__ = ["BUDGET_HEALTH_NAME", "RunningServer", "build_server", "run_until_signal"]


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
        shadow_source: DetectorLike | Callable[[], DetectorLike] | None = None,
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
        self.budget: StartupBudget | None = None  # with config.budget, once warm
        self.refused: str | None = None  # why the server refuses to serve (strict budget)
        self.shadow: ShadowTeacher | None = None
        self.kserve: KServeServicer | None = None  # the KServe v2 service (build_server)
        self._shadow_source = shadow_source
        self._owns_detector = False
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def target(self) -> str:
        return f"{self.config.host}:{self.port}"

    @property
    def unix_target(self) -> str | None:
        """``unix:PATH`` when the server also listens on a Unix domain socket."""
        return f"unix:{self.config.unix_socket}" if self.config.unix_socket else None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the model is warm (True) or ``timeout`` passes (False; also at once
        when a strict budget failed: see ``refused``); re-raises a model-loading error."""
        done = self._ready.wait(timeout)
        if self.load_error is not None:
            raise self.load_error
        return done and self.scheduler is not None

    def _load(self, source: DetectorLike | Callable[[], DetectorLike]) -> None:
        try:
            rss_before = rss_mb()
            if hasattr(source, "detect"):
                detector, rss_before = source, None  # loaded elsewhere: its memory is unknown
            else:
                detector = source()
                self._owns_detector = True
            self.detector = detector
            config = self.config
            detector.warmup(config.warmup_runs)
            p50, p99 = probe_latency(detector, config.latency_probe_runs)
            budget = None
            if config.budget is not None:
                budget = check_startup_budget(
                    detector,
                    config.budget,
                    p50=p50,
                    p99=p99,
                    probe_runs=config.latency_probe_runs,
                    max_batch=config.max_batch,
                    rss_before=rss_before,
                )
            refused = budget is not None and not budget.passed and config.strict_budget
            shadow = None
            if self._shadow_source is not None and not refused:
                names = detector.spec.class_names
                shadow = ShadowTeacher(
                    self._shadow_source,
                    config.shadow or ShadowConfig(),
                    names,
                    self.metrics.add_shadow(names),
                )
                shadow.start()
            tap = _model_tap(detector, shadow)
            scheduler = Scheduler(
                tap,
                config,
                on_batch=self.metrics.batch_size.observe,
            )
            scheduler.set_service_estimate(p50)
            self.metrics.watch_scheduler(scheduler.stats)
            info = model_info(detector, config, scheduler.max_batch, p50, p99, budget)
            with self._stop_lock:
                self.budget, self.shadow = budget, shadow
                if self._stopped.is_set():  # stopped while loading: stop() closes it
                    if shadow is not None:
                        shadow.stop(0.0)
                    return
                if budget is not None:
                    status = health_pb2.HealthCheckResponse
                    self.health.set(
                        BUDGET_HEALTH_NAME, status.SERVING if budget.passed else status.NOT_SERVING
                    )
                if refused:
                    self.refused = f"{budget.summary()}; refusing to serve (--strict-budget)"
                    self.servicer.refuse(self.refused)
                    if self.kserve is not None:
                        self.kserve.refuse(self.refused)
                    log.error("%s: %s", config.budget_source, self.refused)
                    return
                scheduler.start()
                self.scheduler, self.model_info = scheduler, info
                self.servicer.attach(scheduler, tuple(detector.spec.class_names), info, shadow)
                if self.kserve is not None:
                    self.kserve.attach(scheduler, tap)
                for name in ("", SERVICE_NAME):
                    self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
                self.metrics.model_ready.set(1)
            log.info("model ready: %s p50 %.1f ms p99 %.1f ms", info.backend, p50, p99)
            if budget is not None:
                level = logging.INFO if budget.passed else logging.WARNING
                log.log(level, "%s: %s", config.budget_source, budget.summary())
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
        if self.kserve is not None:
            self.kserve.begin_shutdown()
        self.server.stop(grace).wait(grace + 1.0)
        idle = self.scheduler is None or self.scheduler.join(timeout=grace + 1.0)
        if not idle:
            log.warning("the model worker did not finish within %.1f s", grace + 1.0)
        if self.scheduler is not None:
            st = self.scheduler.stats()
            log.info(
                "model worker: %d calls, %.3f s busy; %d waits for a stream behind, %.3f s",
                st["calls"],
                st["busy_s"],
                st["holds"],
                st["held_s"],
            )
        if self.shadow is not None:
            self.shadow.stop(grace)
        # a model still loading/warming up is closed once the loader lets go of it
        idle = self._ready.wait(grace + 1.0) and idle
        if idle and self._owns_detector and self.detector is not None:
            self.detector.close()
        self.metrics.stop_http()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


def _model_tap(detector: DetectorLike, shadow: ShadowTeacher | None) -> RawTap:
    """What the scheduler runs: the detector (through the shadow teacher's tap when there
    is one), plus the KServe ``<name>_raw`` model's jobs on the detector's backend alone."""
    inner = ShadowTap(detector, shadow) if shadow is not None else detector
    return RawTap(inner, getattr(detector, "backend", None))


def _grpc_server(
    config: ServerConfig,
    servicer: DetectorServicer,
    health_servicer: health.HealthServicer,
    kserve: KServeServicer | None = None,
) -> grpc.Server:
    """A gRPC server (not yet bound) with the detector, health and reflection services
    (and ``kserve``'s ``inference.GRPCInferenceService`` when given), the token check
    when ``config.token`` is set, and one thread per possible call."""
    interceptors = [TokenAuthInterceptor(config.token)] if config.token else []
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
    kserve_names = (add_kserve_to_server(kserve, server),) if kserve is not None else ()
    reflection.enable_server_reflection(
        (SERVICE_NAME, *kserve_names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server


def _bind(server: grpc.Server, config: ServerConfig) -> int:
    """Bind ``config.host:config.port`` (TLS with ``config.tls_cert``); returns the port.
    Raises ConfigError for an unreadable TLS file or a port that cannot be bound."""
    address = f"{config.host}:{config.port}"
    try:
        port = _add_port(server, address, config)
    except RuntimeError as e:
        raise ConfigError(f"cannot listen on {address} ({e}); is the port in use?") from e
    if port == 0:
        raise ConfigError(f"cannot listen on {address}; is the port in use?")
    if config.unix_socket:
        _bind_unix(server, config)
    local = config.host in ("127.0.0.1", "localhost", "::1")
    if config.token and not config.tls_cert and not local:
        log.warning(
            "a bearer token over plain TCP on %s can be sniffed; add --tls-cert/--tls-key", address
        )
    return port


def _add_port(server: grpc.Server, address: str, config: ServerConfig) -> int:
    """Listen on ``address``, with TLS when ``config.tls_cert`` is set; gRPC's port (0 when
    it could not bind). Raises ConfigError for an unreadable TLS file."""
    if not config.tls_cert:
        return server.add_insecure_port(address)
    key = _read_file(config.tls_key, "--tls-key")
    creds = grpc.ssl_server_credentials([(key, _read_file(config.tls_cert, "--tls-cert"))])
    return server.add_secure_port(address, creds)


def _bind_unix(server: grpc.Server, config: ServerConfig) -> None:
    """Also listen on ``unix:config.unix_socket`` (TLS too when the TCP port has it).
    Raises ConfigError when the socket cannot be made there."""
    path = Path(config.unix_socket or "")
    if not path.parent.is_dir():
        raise ConfigError(f"--unix-socket {path}: the folder {path.parent} does not exist")
    if path.exists() and not path.is_socket():
        raise ConfigError(f"--unix-socket {path}: a file that is not a socket is there")
    address = f"unix:{path}"
    try:
        bound = _add_port(server, address, config)
    except RuntimeError as e:
        raise ConfigError(f"--unix-socket {path}: cannot listen there ({e})") from e
    if bound == 0:
        raise ConfigError(f"--unix-socket {path}: cannot listen there")


def build_server(
    detector: DetectorLike | Callable[[], DetectorLike],
    config: ServerConfig,
    shadow_teacher: DetectorLike | Callable[[], DetectorLike] | None = None,
) -> RunningServer:
    """Start a server for ``detector`` (an object with the ``runtime.pipeline.Detector``
    API, or a zero-argument factory that loads one; the server closes what it loaded).
    ``shadow_teacher`` (the same kinds; a factory is called on the shadow worker thread)
    enables the shadow teacher with ``config.shadow`` (default ``ShadowConfig()``).

    Returns at once, listening with health NOT_SERVING; the model warms up in the
    background (``RunningServer.wait_ready``). Raises ConfigError for bad settings, an
    unreadable TLS file or a port that cannot be bound.
    """
    config.validate()
    metrics = ServerMetrics()
    servicer = DetectorServicer(metrics, config)
    kserve = KServeServicer(metrics, config)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    server = _grpc_server(config, servicer, health_servicer, kserve)
    port = _bind(server, config)
    server.start()
    metrics_port = None
    if config.metrics_port is not None:
        try:
            metrics_port = metrics.serve_http(config.metrics_port, config.host)
        except OSError as e:
            server.stop(None)
            raise ConfigError(f"cannot serve metrics on port {config.metrics_port}: {e}") from e
    running = RunningServer(
        server, port, config, servicer, health_servicer, metrics, metrics_port, shadow_teacher
    )
    running.kserve = kserve
    threading.Thread(
        target=running._load, args=(detector,), name="understudy-load", daemon=True
    ).start()
    return running


def run_until_signal(
    detector: DetectorLike | Callable[[], DetectorLike],
    config: ServerConfig,
    grace: float = 5.0,
    shadow_teacher: DetectorLike | Callable[[], DetectorLike] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT, then stop gracefully and return 0 (main thread only).
    With ``config.strict_budget`` and a failed budget: print why on stderr, stop and
    return 1.

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
        running = build_server(detector, config, shadow_teacher)
        print(f"understudy serve: listening on {running.target}", flush=True)
        if running.unix_target:
            print(f"understudy serve: also listening on {running.unix_target}", flush=True)
        if running.metrics_port is not None:
            print(
                f"understudy serve: metrics on http://{config.host}:{running.metrics_port}/metrics",
                flush=True,
            )
        try:
            while not running.wait_ready(timeout=0.2):
                if stop.is_set() or running.refused:
                    break
            if running.refused:
                print(f"understudy serve: {running.refused}", file=sys.stderr, flush=True)
                return 1
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
