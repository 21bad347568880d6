"""One StreamDetect call: a reader thread, the frames' lane, and in-order delivery.

The reader thread pulls frames off the gRPC request iterator, decodes them and submits
them to the scheduler; the RPC handler thread (``responses()``) yields one
``StreamResponse`` per frame, in the order the frames arrived, as their outcomes come in.

Memory stays bounded: a frame takes a *credit* when it is read and gives it back when
its response has been handed to gRPC, so at most ``max_outstanding`` frames per stream
are decoded, queued, computing or waiting to be sent. A client that stops reading
responses therefore stops having its frames read (gRPC flow control pushes back), and
the model worker never blocks on a slow client.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from runtime.errors import InputError
from runtime.proto import pb
from runtime.scheduler import Job, Outcome, Scheduler

log = logging.getLogger(__name__)
_END = object()
JITTER_WINDOW = 64  # frames: the quickest of a stream's last 64 (~2 s at 30 FPS)


class ArrivalJitter:
    """How much later than the quickest of its stream's recent frames a frame arrived.

    ``excess(age_ms)`` takes a frame's capture age (arrival minus capture time, ms, read
    across the two clocks) and returns it minus the smallest age of the last ``window``
    frames, itself included: >= 0. The clocks' offset and the network's fixed latency
    are in every age and cancel out; what is left is the frame's extra delay on its way
    to the server (queued in the client, in gRPC, in a busy network), which counts
    against its budget with ``--deadline-from jitter``. A sliding-window minimum: O(1)
    amortized per frame."""

    def __init__(self, window: int = JITTER_WINDOW) -> None:
        self.window = window
        self._count = 0
        self._mins: collections.deque[tuple[int, float]] = collections.deque()

    def excess(self, age_ms: float) -> float:
        mins = self._mins
        while mins and mins[-1][1] >= age_ms:
            mins.pop()
        mins.append((self._count, age_ms))
        if mins[0][0] <= self._count - self.window:
            mins.popleft()
        self._count += 1
        return age_ms - mins[0][1]


@dataclass(frozen=True)
class FrameMeta:
    """What an answer echoes from its frame (the image bytes are not kept)."""

    frame_id: int
    camera_id: str
    capture_seconds: int
    capture_nanos: int
    width: int  # of the image as sent
    height: int
    budget_ms: float
    scale: int = 1  # the image was decoded at 1/scale (boxes are scaled back)
    pre_arrival_ms: float = 0.0  # capture to arrival, when budgets count from capture
    capture_age_ms: float = 0.0  # capture to arrival on the server's clock, as measured


@dataclass(frozen=True)
class Rejected:
    """A frame refused before scheduling (bad input): gRPC status name and message."""

    code: str
    message: str


def frame_meta(
    frame: pb.Frame, width: int, height: int, budget_ms: float, scale: int = 1
) -> FrameMeta:
    ts = frame.capture_time
    return FrameMeta(
        frame.frame_id, frame.camera_id, ts.seconds, ts.nanos, width, height, budget_ms, scale
    )


class StreamSession:
    """State of one open stream (see the module docstring)."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        prepare: Callable[[pb.Frame], tuple[Any, FrameMeta, float]],
        convert: Callable[[FrameMeta, Outcome | Rejected], pb.StreamResponse],
        count_received: Callable[[], None],
        max_outstanding: int = 32,
        capture_ages: Callable[[pb.Frame, float], tuple[float, float]] | None = None,
        count_jitter: bool = False,
    ) -> None:
        """``capture_ages(frame, received)``: (capture age, the part of it the budget
        counts), ms; ``count_jitter``: the budget also counts a frame's delay beyond the
        quickest of the stream's recent frames (:class:`ArrivalJitter`), for frames
        with a capture time."""
        self._scheduler = scheduler
        self._age = capture_ages or (lambda frame, received: (0.0, 0.0))
        self._jitter = ArrivalJitter() if count_jitter else None
        self._prepare = prepare  # frame -> (image, meta, decode_ms); raises InputError
        self._convert = convert
        self._count_received = count_received
        self._lane = scheduler.open_lane()
        self._credits = threading.Semaphore(max_outstanding)
        self._lock = threading.Lock()
        self._done: dict[int, tuple[FrameMeta, Outcome | Rejected]] = {}
        self._next_in = 0
        self._next_out = 0
        self._input_closed = False
        self._closed = False  # cancelled or finished: stop everything
        self._out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._reader: threading.Thread | None = None

    # ------------------------------------------------------------------ reading
    def start(self, requests: Iterator[pb.Frame]) -> None:
        self._reader = threading.Thread(
            target=self._read, args=(requests,), name="understudy-stream-reader", daemon=True
        )
        self._reader.start()

    def _read(self, requests: Iterator[pb.Frame]) -> None:
        try:
            for frame in requests:
                received = time.perf_counter()
                if not self._take_credit():
                    return
                self._accept(frame, received)
                self._count_received()  # after it is queued (tests rely on this order)
        except grpc.RpcError:  # the RPC was cancelled or broke: nothing more to read
            log.debug("stream reader: the call ended")
        except Exception:  # a bug: end this stream, keep the server
            log.exception("stream reader failed; ending the stream")
        finally:
            self.close_input()

    def _take_credit(self) -> bool:
        while not self._credits.acquire(timeout=0.1):
            if self._closed:
                return False
        return not self._closed and not self._input_closed

    def _accept(self, frame: pb.Frame, received: float) -> None:
        with self._lock:
            if self._input_closed:
                return
            seq = self._next_in
            self._next_in += 1
        try:
            self._submit(seq, frame, received)
        except InputError as e:
            self._complete(seq, frame_meta(frame, 0, 0, 0.0), Rejected("INVALID_ARGUMENT", str(e)))
        except Exception as e:  # a bug or a library error: answer the frame, keep reading
            log.exception("stream frame %d could not be prepared", frame.frame_id)
            message = f"the server could not prepare this frame: {type(e).__name__}: {e}"
            self._complete(seq, frame_meta(frame, 0, 0, 0.0), Rejected("INTERNAL", message))

    def _submit(self, seq: int, frame: pb.Frame, received: float) -> None:
        """Decode ``frame`` (sequence number ``seq``) and queue it on the stream's lane."""
        image, meta, decode_ms = self._prepare(frame)
        capture_age_ms, age_ms = self._age(frame, received)
        if self._jitter is not None and (frame.capture_time.seconds or frame.capture_time.nanos):
            age_ms = max(age_ms, self._jitter.excess(capture_age_ms))
        meta = dataclasses.replace(meta, pre_arrival_ms=age_ms, capture_age_ms=capture_age_ms)
        job = Job(
            image=image,
            budget_ms=meta.budget_ms,
            received=received,
            decode_ms=decode_ms,
            on_done=lambda outcome: self._complete(seq, meta, outcome),
            deadline_start=received - age_ms / 1000.0,
            priority=frame.priority,
        )
        self._scheduler.submit(self._lane, job)

    def close_input(self) -> None:
        """No more frames will be accepted (client half-closed, or server shutdown)."""
        with self._lock:
            self._input_closed = True
            self._flush()

    # ------------------------------------------------------------------ delivery
    def _complete(self, seq: int, meta: FrameMeta, outcome: Outcome | Rejected) -> None:
        with self._lock:
            if self._closed:
                return
            self._done[seq] = (meta, outcome)
            self._flush()

    def _flush(self) -> None:
        """Move consecutive finished frames to the output queue (lock held)."""
        while self._next_out in self._done:
            self._out.put(self._done.pop(self._next_out))
            self._next_out += 1
        if self._input_closed and self._next_out == self._next_in and not self._closed:
            self._closed = True
            self._out.put(_END)

    def responses(self) -> Iterator[pb.StreamResponse]:
        """Yield the answers in frame order; ends when input is closed and all answered."""
        while True:
            item = self._out.get()
            if item is _END:
                return
            meta, outcome = item
            response = self._convert(meta, outcome)
            yield response
            self._credits.release()

    def cancel(self) -> None:
        """Stop now (RPC cancelled or finished): forget waiting frames and pending answers."""
        with self._lock:
            already = self._closed
            self._closed = True
            self._input_closed = True
            self._done.clear()
            if not already:
                self._out.put(_END)
        self._scheduler.close_lane(self._lane)
