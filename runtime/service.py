"""The ``understudy.v1.Detector`` servicer: frames in, detections (or notices) out.

Unary ``Detect``: bad input -> INVALID_ARGUMENT; a frame dropped because its budget ran
out while it waited -> DEADLINE_EXCEEDED; the client's own deadline passing ->
DEADLINE_EXCEEDED; model not loaded yet or shutting down -> UNAVAILABLE; the model
raising -> INTERNAL. ``StreamDetect``: exactly one ``StreamResponse`` per frame, in frame
order (see :mod:`runtime.stream_session`); more than ``max_streams`` open streams ->
RESOURCE_EXHAUSTED. ``GetModelInfo`` adds the shadow teacher's current report, when there
is one, to the start-up ModelInfo.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import grpc
import numpy as np

from runtime.errors import InputError
from runtime.frames import decode_frame_scaled
from runtime.metrics import ServerMetrics
from runtime.proto import pb, pb_grpc
from runtime.scheduler import Answered, Dropped, Failed, Job, Outcome, Scheduler
from runtime.server_config import ServerConfig
from runtime.shadow_saver import FrameTag
from runtime.stream_session import FrameMeta, Rejected, StreamSession, frame_meta


def require_ready(
    context: grpc.ServicerContext,
    scheduler: Scheduler | None,
    refused: str | None,
    stopping: bool,
) -> Scheduler:
    """The scheduler of a servicer that may answer now; else the call is aborted with
    UNAVAILABLE and one line: refused (a failed strict budget), shutting down, or the
    model still loading. Shared by understudy.v1 and the KServe servicer."""
    if refused is not None:
        context.abort(grpc.StatusCode.UNAVAILABLE, f"the server refuses: {refused}")
    if scheduler is None or stopping:
        state = "shutting down" if stopping else "loading the model"
        context.abort(grpc.StatusCode.UNAVAILABLE, f"the server is {state}; retry later")
    return scheduler  # type: ignore[return-value]


class OpenStreams:
    """The open streaming calls of one servicer: at most ``limit`` at once, none admitted
    once stopping; each counted on ``active`` (a gauge) while it runs. Shared by
    understudy.v1's StreamDetect and KServe's ModelStreamInfer."""

    def __init__(self, limit: int, active: Any, what: str) -> None:
        self.limit = limit
        self.stopping = False
        self._active = active
        self._what = what  # the calls as the RESOURCE_EXHAUSTED message names them
        self._lock = threading.Lock()
        self._sessions: set[StreamSession] = set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def stop(self) -> list[StreamSession]:
        """Admit no more; the sessions open now (to close their input)."""
        with self._lock:
            self.stopping = True
            return list(self._sessions)

    def serve(
        self,
        context: grpc.ServicerContext,
        make_session: Callable[[], StreamSession],
        frames: Iterator[Any],
    ) -> Iterator[Any]:
        """Run a new session (``make_session()``) over ``frames`` and yield its answers;
        the call is aborted (UNAVAILABLE while stopping, else RESOURCE_EXHAUSTED) when no
        more may open. The session is cancelled and released however the call ends."""
        with self._lock:
            full = len(self._sessions) >= self.limit or self.stopping
            if not full:
                session = make_session()
                self._sessions.add(session)
        if full and self.stopping:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        if full:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server already has {self.limit} open {self._what} (--max-streams); "
                "close one or retry later",
            )
        self._active.inc()
        context.add_callback(session.cancel)
        try:
            session.start(frames)
            yield from session.responses()
        finally:
            session.cancel()
            with self._lock:
                self._sessions.discard(session)
            self._active.dec()


class ShadowReporter(Protocol):
    """What GetModelInfo needs from a shadow teacher (``runtime.shadow.ShadowTeacher``)."""

    def report(self) -> pb.ShadowReport: ...

    def tag(self, image: np.ndarray, tag: FrameTag) -> None: ...


DROP_REASONS = {
    "superseded": pb.DROP_REASON_SUPERSEDED,
    "budget_exceeded": pb.DROP_REASON_BUDGET_EXCEEDED,
    "queue_full": pb.DROP_REASON_QUEUE_FULL,
    "shutting_down": pb.DROP_REASON_SHUTTING_DOWN,
}


class _Slot:
    """A one-shot result holder: the first ``set`` wins."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.value: Outcome | None = None

    def set(self, value: Outcome | None) -> None:
        with self._lock:
            if not self._event.is_set():
                self.value = value
                self._event.set()

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)


log = logging.getLogger(__name__)
MAX_CAPTURE_AGE_S = 10.0  # older (or future) capture times are clock trouble: use arrival


class DetectorServicer(pb_grpc.DetectorServicer):
    """Serves one model through a :class:`Scheduler`; becomes ready with :meth:`attach`."""

    def __init__(self, metrics: ServerMetrics, config: ServerConfig) -> None:
        """``config``: the server's settings (``budget_ms`` for frames that send 0,
        ``max_pixels``, ``max_streams``, ``max_outstanding``, ``reduced_decode``,
        ``deadline_from``); raises ConfigError for bad ones."""
        config.validate()
        self.metrics = metrics
        self.config = config
        self._warned_clock = False
        self.fit_size: tuple[int, int] | None = None  # set by attach when reduced_decode
        self._scheduler: Scheduler | None = None
        self._class_names: tuple[str, ...] = ()
        self._model_info: pb.ModelInfo | None = None
        self._shadow: ShadowReporter | None = None
        self._refused: str | None = None
        self._streams = OpenStreams(config.max_streams, metrics.active_streams, "streams")

    # ------------------------------------------------------------------ lifecycle
    def attach(
        self,
        scheduler: Scheduler,
        class_names: tuple[str, ...],
        info: pb.ModelInfo,
        shadow: ShadowReporter | None = None,
    ) -> None:
        """Start answering frames with ``scheduler`` (the model is loaded and warm)."""
        if self.config.reduced_decode:
            self.fit_size = (int(info.input_height), int(info.input_width))
        self._class_names = tuple(class_names)
        self._model_info = info
        self._shadow = shadow
        self._scheduler = scheduler

    def refuse(self, reason: str) -> None:
        """Never become ready: calls fail with UNAVAILABLE naming ``reason``."""
        self._refused = reason

    @property
    def ready(self) -> bool:
        return self._scheduler is not None and not self._streams.stopping

    def begin_shutdown(self) -> None:
        """Refuse new calls; open streams stop reading and end once their frames are
        answered (waiting frames get SHUTTING_DOWN notices from the scheduler)."""
        sessions = self._streams.stop()
        if self._scheduler is not None:
            self._scheduler.begin_shutdown()
        for session in sessions:
            session.close_input()

    # ------------------------------------------------------------------ helpers
    def _require_ready(self, context: grpc.ServicerContext) -> Scheduler:
        return require_ready(context, self._scheduler, self._refused, self._streams.stopping)

    def prepare(self, frame: pb.Frame) -> tuple[np.ndarray, FrameMeta, float]:
        """Validate the budget and decode the image: (image, meta, decode_ms)."""
        budget = frame.budget_ms
        if not math.isfinite(budget) or budget < 0:
            raise InputError(
                f"frame {frame.frame_id}: budget_ms must be >= 0 and finite (0 = the server "
                f"default of {self.config.budget_ms:g} ms), got {budget}"
            )
        start = time.perf_counter()
        try:
            decoded = decode_frame_scaled(
                frame, max_pixels=self.config.max_pixels, fit_size=self.fit_size
            )
        except InputError as e:
            raise InputError(f"frame {frame.frame_id}: {e}") from None
        decode_ms = (time.perf_counter() - start) * 1000.0
        budget = budget or self.config.budget_ms
        meta = frame_meta(frame, decoded.width, decoded.height, budget, decoded.scale)
        if self._shadow is not None:  # where and when, for the frames the shadow saves
            ts = frame.capture_time
            capture = ts.seconds * 1_000_000_000 + ts.nanos if ts.seconds or ts.nanos else None
            tag = FrameTag(frame.camera_id, frame.frame_id, capture, time.time_ns())
            self._shadow.tag(decoded.image, tag)
        return decoded.image, meta, decode_ms

    def capture_ages(self, frame: pb.Frame, received: float) -> tuple[float, float]:
        """(capture_age_ms, budget_age_ms) of a frame: how old it was when it arrived (its
        capture time on the server's clock; 0 without one, negative for one in the
        future; recorded in the metrics), and the part of that age its budget counts:
        the same with ``deadline_from="capture"``, else 0, and 0 for capture times in the
        future or over MAX_CAPTURE_AGE_S old, i.e. clocks that are not synchronized."""
        ts = frame.capture_time
        if not (ts.seconds or ts.nanos):
            return 0.0, 0.0
        now_ns = time.time_ns() - int((time.perf_counter() - received) * 1e9)
        age_s = (now_ns - (ts.seconds * 1_000_000_000 + ts.nanos)) / 1e9
        self.metrics.observe_capture_age(age_s)
        if self.config.deadline_from != "capture":
            return age_s * 1000.0, 0.0
        if 0.0 <= age_s <= MAX_CAPTURE_AGE_S:
            return age_s * 1000.0, age_s * 1000.0
        if not self._warned_clock:
            self._warned_clock = True
            log.warning(
                "frame %d: capture time is %.3f s from the server's clock; budgets of such "
                "frames count from their arrival (are the clocks synchronized?)",
                frame.frame_id,
                -age_s,
            )
        return age_s * 1000.0, 0.0

    def detect_response(self, meta: FrameMeta, answer: Answered) -> pb.DetectResponse:
        """Build the answer for one frame and record its metrics."""
        t = answer.timings
        met = t.total_ms + meta.pre_arrival_ms <= meta.budget_ms
        response = pb.DetectResponse(
            frame_id=meta.frame_id,
            camera_id=meta.camera_id,
            budget_ms=meta.budget_ms,
            budget_met=met,
            image_width=meta.width,
            image_height=meta.height,
            batch_size=answer.batch_size,
            capture_age_ms=meta.capture_age_ms,
            timings=pb.StageTimings(
                queue_ms=t.queue_ms,
                decode_ms=t.decode_ms,
                preprocess_ms=t.preprocess_ms,
                infer_ms=t.infer_ms,
                postprocess_ms=t.postprocess_ms,
                total_ms=t.total_ms,
            ),
        )
        if meta.capture_seconds or meta.capture_nanos:
            response.capture_time.seconds = meta.capture_seconds
            response.capture_time.nanos = meta.capture_nanos
        d = answer.detections
        boxes = d.boxes
        if meta.scale != 1:  # decoded reduced: back to the pixels of the image as sent
            boxes = np.minimum(boxes * meta.scale, [meta.width, meta.height] * 2)
        names = self._class_names
        add = response.detections.add
        for (x1, y1, x2, y2), score, cid in zip(
            boxes.tolist(), d.scores.tolist(), d.class_ids.tolist()
        ):
            add(
                x1=x1,
                y1=y1,
                x2=x2,
                y2=y2,
                score=score,
                class_id=cid,
                label=names[cid] if 0 <= cid < len(names) else "",
            )
        self.metrics.observe_timings(t)
        if not met:
            self.metrics.budget_misses.inc()
        return response

    def stream_response(self, meta: FrameMeta, outcome: Outcome | Rejected) -> pb.StreamResponse:
        """Convert one frame's outcome to its StreamResponse (and count it)."""
        match outcome:
            case Answered():
                self.metrics.answered.labels(rpc="stream").inc()
                result = self.detect_response(meta, outcome)
                self.metrics.streams.record(
                    meta.camera_id, "answered" if result.budget_met else "late"
                )
                return pb.StreamResponse(result=result)
            case Dropped(reason=reason, detail=detail, queue_ms=queue_ms):
                self.metrics.dropped.labels(reason=reason).inc()
                self.metrics.streams.record(meta.camera_id, "dropped")
                return pb.StreamResponse(
                    dropped=pb.DropNotice(
                        frame_id=meta.frame_id,
                        camera_id=meta.camera_id,
                        reason=DROP_REASONS[reason],
                        detail=detail,
                        queue_ms=queue_ms,
                    )
                )
            case Rejected(code=code, message=message):
                status = grpc.StatusCode[code]
                self.metrics.errors.labels(code=code).inc()
                return pb.StreamResponse(error=self._error(meta, status, message))
            case Failed(message=message):
                self.metrics.errors.labels(code="INTERNAL").inc()
                return pb.StreamResponse(error=self._error(meta, grpc.StatusCode.INTERNAL, message))
        raise TypeError(f"unknown outcome {outcome!r}")

    @staticmethod
    def _error(meta: FrameMeta, status: grpc.StatusCode, message: str) -> pb.FrameError:
        return pb.FrameError(
            frame_id=meta.frame_id, camera_id=meta.camera_id, code=status.value[0], message=message
        )

    # ------------------------------------------------------------------ RPCs
    def Detect(self, request: pb.Frame, context: grpc.ServicerContext) -> pb.DetectResponse:
        received = time.perf_counter()
        self.metrics.received.labels(rpc="detect").inc()
        scheduler = self._require_ready(context)
        try:
            image, meta, decode_ms = self.prepare(request)
        except InputError as e:
            self.metrics.errors.labels(code="INVALID_ARGUMENT").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        capture_age_ms, age_ms = self.capture_ages(request, received)
        meta = dataclasses.replace(meta, pre_arrival_ms=age_ms, capture_age_ms=capture_age_ms)
        slot = _Slot()
        job = Job(
            image,
            meta.budget_ms,
            received,
            decode_ms,
            on_done=slot.set,
            deadline_start=received - age_ms / 1000.0,
            priority=request.priority,
        )

        def on_rpc_end() -> None:
            job.cancelled = True
            slot.set(None)

        context.add_callback(on_rpc_end)
        scheduler.submit_unary(job)  # the lane all unary calls share
        remaining = context.time_remaining()  # huge (not None) when the call has no deadline
        finished = slot.wait(None if remaining is None or remaining > 86_400 else remaining)
        outcome = slot.value
        if not finished or outcome is None:
            job.cancelled = True
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the call ended (deadline passed)")
        match outcome:
            case Answered():
                self.metrics.answered.labels(rpc="detect").inc()
                return self.detect_response(meta, outcome)
            case Dropped(reason=reason, detail=detail):
                self.metrics.dropped.labels(reason=reason).inc()
                code = {
                    "budget_exceeded": grpc.StatusCode.DEADLINE_EXCEEDED,
                    "shutting_down": grpc.StatusCode.UNAVAILABLE,
                }.get(reason, grpc.StatusCode.RESOURCE_EXHAUSTED)
                context.abort(code, f"frame {request.frame_id} dropped ({reason}): {detail}")
            case Failed(message=message):
                self.metrics.errors.labels(code="INTERNAL").inc()
                context.abort(grpc.StatusCode.INTERNAL, f"frame {request.frame_id}: {message}")
        raise AssertionError("unreachable")

    def StreamDetect(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        scheduler = self._require_ready(context)
        yield from self._streams.serve(
            context,
            lambda: StreamSession(
                scheduler,
                prepare=self.prepare,
                convert=self.stream_response,
                count_received=self.metrics.received.labels(rpc="stream").inc,
                max_outstanding=self.config.max_outstanding,
                capture_ages=self.capture_ages,
                count_jitter=self.config.deadline_from == "jitter",
            ),
            request_iterator,
        )

    def GetModelInfo(
        self, request: pb.ModelInfoRequest, context: grpc.ServicerContext
    ) -> pb.ModelInfo:
        self._require_ready(context)
        if self._shadow is None:
            return self._model_info  # type: ignore[return-value]
        info = pb.ModelInfo()
        info.CopyFrom(self._model_info)
        info.shadow.CopyFrom(self._shadow.report())
        return info
