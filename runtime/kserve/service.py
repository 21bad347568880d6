"""``inference.GRPCInferenceService``: the KServe v2 / Triton protocol beside understudy.v1.

Served on the same port, behind the same auth/TLS, by the same scheduler as
``understudy.v1.Detector``: a ModelInfer call is one job on a lane of its own (like
Detect), a ModelStreamInfer call is one :class:`runtime.stream_session.StreamSession`
(like StreamDetect: keep-latest dropping per stream, in-order answers, bounded memory).

Budgets: a request's budget is its ``timeout`` parameter (microseconds, int64 or uint64)
or, without one, the server's ``--budget-ms``. A frame dropped unprocessed (superseded,
over its budget, queue full) is still answered, in streams and unary calls alike, with
empty outputs and the response parameters ``understudy_dropped: true``,
``understudy_drop_reason`` and ``understudy_drop_detail`` (Triton clients count a missing
response or an ``error_message`` as a failed request). A frame dropped because the
server is shutting down gets UNAVAILABLE (unary) or an ``error_message`` (stream).

Errors: a malformed request (datatype, shape, contents, undecodable image, unknown input
or output) gets INVALID_ARGUMENT, an unknown model or version NOT_FOUND, each with a
one-line message (in a stream: ``error_message``, and the stream goes on). The protocol's
other RPCs (repository, shared memory, trace, logging) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from types import SimpleNamespace
from typing import Any

import grpc

from runtime.kserve.models import VERSION, DetectionModel, Limits, Prepared, RawModel
from runtime.kserve.raw import RawTap
from runtime.kserve.statistics import detection_statistics, raw_statistics
from runtime.kserve.tensors import TensorError
from runtime.metrics import ServerMetrics
from runtime.proto.inference import grpc_service_pb2 as kpb
from runtime.proto.inference import grpc_service_pb2_grpc as kpb_grpc
from runtime.proto.inference import model_config_pb2 as mc
from runtime.scheduler import Answered, Dropped, Failed, Job, Outcome, Scheduler
from runtime.server_config import ServerConfig
from runtime.service import OpenStreams, require_ready
from runtime.stream_session import FrameMeta, Rejected, StreamSession

log = logging.getLogger(__name__)
_SERVICE = kpb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE_NAME = _SERVICE.full_name
IMPLEMENTED = frozenset(m.name for m in _SERVICE.methods)
EXTENSIONS = ("model_configuration", "parameters", "statistics")
_NO_CAPTURE_TIME = SimpleNamespace(seconds=0, nanos=0)


def _server_version() -> str:
    try:
        return metadata.version("understudy")
    except metadata.PackageNotFoundError:
        return "0"


def model_name(config: ServerConfig, spec: Any) -> str:
    """The name Triton clients use: ``--model-name``, else the model's preset, else
    "understudy"; the raw network is ``<name>_raw``."""
    return config.model_name or spec.preset or "understudy"


@dataclass(frozen=True)
class _Ticket:
    """What answering a request needs once its image is handed to the scheduler."""

    model: Any  # DetectionModel | RawModel; None when the request was refused
    request_id: str
    model_name: str
    final_flag: bool  # the client asked for triton_final_response
    prepared: Prepared | None
    budget_ms: float
    code: str = "INVALID_ARGUMENT"  # for a refused request


def _int_param(param: kpb.InferParameter, name: str) -> int:
    kind = param.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise TensorError(f"parameter {name!r} must be an integer, got {kind or 'nothing'}")
    return int(getattr(param, kind))


class KServeServicer(kpb_grpc.GRPCInferenceServiceServicer):
    """Serves ``<name>`` and ``<name>_raw`` (see the module docstring); becomes ready with
    :meth:`attach`."""

    def __init__(self, metrics: ServerMetrics, config: ServerConfig) -> None:
        config.validate()
        self.metrics = metrics
        self.config = config
        self.limits = Limits(config.max_pixels)
        self.models: dict[str, DetectionModel | RawModel] = {}
        self.name = ""
        self._scheduler: Scheduler | None = None
        self._tap: RawTap | None = None
        self._refused: str | None = None
        self._streams = OpenStreams(
            config.max_streams, metrics.active_streams, "ModelStreamInfer calls"
        )

    # ------------------------------------------------------------------ lifecycle
    def attach(self, scheduler: Scheduler, tap: RawTap) -> None:
        """Start answering with ``scheduler``, whose detector is ``tap`` (the model is warm).
        ``<name>_raw`` is offered when the tap has a backend."""
        spec = tap.spec
        name = model_name(self.config, spec)
        models: dict[str, DetectionModel | RawModel] = {
            name: DetectionModel(name, spec, tap.backend_name)
        }
        if tap.backend is not None:
            models[f"{name}_raw"] = RawModel(f"{name}_raw", spec, tap.backend)
        if self.config.reduced_decode:
            self.limits = Limits(self.config.max_pixels, tuple(spec.input_size))
        self.name, self.models, self._tap = name, models, tap
        self._scheduler = scheduler

    def refuse(self, reason: str) -> None:
        """Never become ready: calls fail with UNAVAILABLE naming ``reason``."""
        self._refused = reason

    @property
    def ready(self) -> bool:
        return self._scheduler is not None and not self._streams.stopping and self._refused is None

    def begin_shutdown(self) -> None:
        """Refuse new calls; open streams stop reading and end once answered."""
        for session in self._streams.stop():
            session.close_input()

    # ------------------------------------------------------------------ helpers
    def _require_ready(self, context: grpc.ServicerContext) -> Scheduler:
        return require_ready(context, self._scheduler, self._refused, self._streams.stopping)

    def _model(self, name: str, version: str) -> DetectionModel | RawModel:
        model = self.models.get(name)
        if model is None:
            known = ", ".join(repr(n) for n in self.models)
            raise TensorError(f"unknown model {name!r}; this server has {known}", "NOT_FOUND")
        if version not in ("", VERSION):
            raise TensorError(
                f"model {name!r} has no version {version!r}; it serves version {VERSION}",
                "NOT_FOUND",
            )
        return model

    def _lookup(self, name: str, version: str, context: grpc.ServicerContext) -> Any:
        self._require_ready(context)
        try:
            return self._model(name, version)
        except TensorError as e:
            context.abort(grpc.StatusCode[e.code], str(e))

    def _budget_ms(self, request: kpb.ModelInferRequest) -> float:
        if "timeout" not in request.parameters:
            return self.config.budget_ms
        us = _int_param(request.parameters["timeout"], "timeout")
        if us < 0:
            raise TensorError(f"parameter 'timeout' must be >= 0 microseconds, got {us}")
        return us / 1000.0 if us else self.config.budget_ms

    def prepare(self, request: kpb.ModelInferRequest) -> tuple[_Ticket, Prepared]:
        """Check and decode a request: (its ticket, its scheduler input). Raises TensorError."""
        model = self._model(request.model_name, request.model_version)
        budget = self._budget_ms(request)
        prepared = model.prepare(request, self.limits)
        final = "triton_enable_empty_final_response" in request.parameters and bool(
            request.parameters["triton_enable_empty_final_response"].bool_param
        )
        light = dataclasses.replace(prepared, image=None)  # the ticket outlives the job
        return _Ticket(model, request.id, model.name, final, light, budget), prepared

    def answer(self, ticket: _Ticket, outcome: Answered | Dropped, rpc: str) -> Any:
        """The response to a request whose frame was answered or dropped (metrics counted)."""
        response = kpb.ModelInferResponse(
            model_name=ticket.model_name, model_version=VERSION, id=ticket.request_id
        )
        ticket.model.fill(response, ticket.prepared, outcome)
        if ticket.final_flag:
            response.parameters["triton_final_response"].bool_param = True
        if isinstance(outcome, Dropped):
            self.metrics.dropped.labels(reason=outcome.reason).inc()
            response.parameters["understudy_dropped"].bool_param = True
            response.parameters["understudy_drop_reason"].string_param = outcome.reason
            response.parameters["understudy_drop_detail"].string_param = outcome.detail
            return response
        self.metrics.answered.labels(rpc=rpc).inc()
        t = outcome.timings
        if isinstance(ticket.model, RawModel):
            self.metrics.observe_raw_timings(t)
        else:
            self.metrics.observe_timings(t)
        if t.total_ms > ticket.budget_ms:
            self.metrics.budget_misses.inc()
        return response

    # ------------------------------------------------------------------ health, metadata
    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return kpb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return kpb.ServerReadyResponse(ready=self.ready)

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        known = request.name in self.models and request.version in ("", VERSION)
        return kpb.ModelReadyResponse(ready=self.ready and known)

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return kpb.ServerMetadataResponse(
            name="understudy", version=_server_version(), extensions=list(EXTENSIONS)
        )

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._lookup(request.name, request.version, context).metadata()

    def ModelConfig(self, request: Any, context: grpc.ServicerContext) -> Any:
        return kpb.ModelConfigResponse(
            config=self._lookup(request.name, request.version, context).config()
        )

    def ModelStatistics(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._require_ready(context)
        names = list(self.models)
        if request.name:
            names = [self._lookup(request.name, request.version, context).name]
        response = kpb.ModelStatisticsResponse()
        for name in names:
            make = raw_statistics if isinstance(self.models[name], RawModel) else None
            make = make or detection_statistics
            response.model_stats.append(make(name, VERSION, self.metrics, self._tap))
        return response

    # ------------------------------------------------------------------ inference
    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        received = time.perf_counter()
        self.metrics.received.labels(rpc="kserve").inc()
        scheduler = self._require_ready(context)
        try:
            ticket, prepared = self.prepare(request)
        except TensorError as e:
            self.metrics.errors.labels(code=e.code).inc()
            context.abort(grpc.StatusCode[e.code], str(e))
        done = threading.Event()
        result: list[Outcome | None] = [None]

        def finish(outcome: Outcome | None) -> None:
            if not done.is_set():
                result[0] = outcome
                done.set()

        job = Job(prepared.image, ticket.budget_ms, received, prepared.decode_ms, on_done=finish)

        def on_rpc_end() -> None:
            job.cancelled = True
            finish(None)

        context.add_callback(on_rpc_end)
        scheduler.submit_unary(job)  # the lane all unary calls share
        remaining = context.time_remaining()  # huge (not None) when the call has no deadline
        finished = done.wait(None if remaining is None or remaining > 86_400 else remaining)
        outcome = result[0]
        if not finished or outcome is None:
            job.cancelled = True
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the call ended (deadline passed)")
        if isinstance(outcome, Failed):
            self.metrics.errors.labels(code="INTERNAL").inc()
            context.abort(grpc.StatusCode.INTERNAL, f"request {request.id!r}: {outcome.message}")
        if isinstance(outcome, Dropped) and outcome.reason == "shutting_down":
            self.metrics.dropped.labels(reason=outcome.reason).inc()
            context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        return self.answer(ticket, outcome, "kserve")  # type: ignore[arg-type]

    def ModelStreamInfer(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        scheduler = self._require_ready(context)
        stream = _StreamRequests(self)
        yield from self._streams.serve(
            context,
            lambda: StreamSession(
                scheduler,
                prepare=stream.prepare,
                convert=stream.convert,
                count_received=self.metrics.received.labels(rpc="kserve_stream").inc,
                max_outstanding=self.config.max_outstanding,
            ),
            stream.items(request_iterator),
        )


class _StreamRequests:
    """One ModelStreamInfer call's side of its StreamSession: numbers the requests,
    prepares them and turns each outcome into a ModelStreamInferResponse."""

    def __init__(self, servicer: KServeServicer) -> None:
        self._servicer = servicer
        self._tickets: dict[int, _Ticket] = {}
        self._lock = threading.Lock()

    @staticmethod
    def items(requests: Iterator[Any]) -> Iterator[Any]:
        """Requests as the session's frames (frame_id = position in the stream)."""
        for i, request in enumerate(requests):
            # Triton's `priority` parameter (1 = highest, larger = lower) does not map onto
            # the scheduler's stream weight (1 + priority): every KServe stream weighs 1
            yield SimpleNamespace(
                request=request,
                frame_id=i,
                camera_id="",
                capture_time=_NO_CAPTURE_TIME,
                priority=0,
            )

    def prepare(self, item: Any) -> tuple[Any, FrameMeta, float]:
        request = item.request
        try:
            ticket, prepared = self._servicer.prepare(request)
        except TensorError as e:
            refused = _Ticket(None, request.id, request.model_name, False, None, 0.0, e.code)
            with self._lock:
                self._tickets[item.frame_id] = refused
            raise
        with self._lock:
            self._tickets[item.frame_id] = ticket
        meta = FrameMeta(
            item.frame_id,
            "",
            0,
            0,
            prepared.width,
            prepared.height,
            ticket.budget_ms,
            prepared.scale,
        )
        return prepared.image, meta, prepared.decode_ms

    def convert(self, meta: FrameMeta, outcome: Outcome | Rejected) -> Any:
        with self._lock:
            ticket = self._tickets.pop(meta.frame_id)
        metrics = self._servicer.metrics
        error = None
        if isinstance(outcome, Rejected):
            metrics.errors.labels(code=ticket.code).inc()
            error = outcome.message
        elif isinstance(outcome, Failed):
            metrics.errors.labels(code="INTERNAL").inc()
            error = outcome.message
        elif isinstance(outcome, Dropped) and outcome.reason == "shutting_down":
            metrics.dropped.labels(reason=outcome.reason).inc()
            error = "the server is shutting down"
        if error is not None:
            response = kpb.ModelInferResponse(model_name=ticket.model_name, id=ticket.request_id)
            return kpb.ModelStreamInferResponse(error_message=error, infer_response=response)
        answer = self._servicer.answer(ticket, outcome, "kserve_stream")  # type: ignore[arg-type]
        return kpb.ModelStreamInferResponse(infer_response=answer)


class UnimplementedRpcs(grpc.GenericRpcHandler):
    """Answers the protocol's RPCs that Understudy does not serve with UNIMPLEMENTED."""

    def service(self, handler_call_details: Any) -> Any:
        prefix = f"/{SERVICE_NAME}/"
        method = handler_call_details.method
        if not method.startswith(prefix) or method[len(prefix) :] in IMPLEMENTED:
            return None
        name = method[len(prefix) :]

        def unimplemented(_request: bytes, context: grpc.ServicerContext) -> None:
            context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{SERVICE_NAME}/{name} is not served by Understudy (it serves "
                f"{', '.join(sorted(IMPLEMENTED))})",
            )

        return grpc.unary_unary_rpc_method_handler(unimplemented)


def add_to_server(servicer: KServeServicer, server: grpc.Server) -> str:
    """Register ``servicer`` and the UNIMPLEMENTED answers on ``server``; returns the
    service's full name (for reflection)."""
    kpb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((UnimplementedRpcs(),))
    return SERVICE_NAME


__all__ = ["SERVICE_NAME", "KServeServicer", "add_to_server", "mc", "model_name"]
