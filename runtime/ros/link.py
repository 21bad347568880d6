"""One camera's link to ``understudy serve``: a StreamDetect call, never blocking the caller.

``CameraLink.offer`` is what a subscription callback calls: it puts the frame in the
call's one-frame slot (``StreamCall`` with ``queue_size=1``: a frame still waiting there
when the next arrives is replaced and counted as dropped by the bridge) and returns at
once. gRPC's sender thread takes the frame from the slot, encodes it (JPEG/PNG/raw) and
sends it; a receiver thread reads the answers in frame order and hands each answered
frame's boxes, with the header kept for it, to ``on_result`` (the node publishes there).
Dropped frames (by the bridge or by the server's budget / keep-latest policy) and frame
errors are counted and publish nothing. When the call fails (server restarted, network)
the receiver reopens it after a short back-off; frames offered meanwhile are dropped.

No rclpy here: the node passes headers through as opaque objects.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from runtime.client import DetectorClient, StreamCall
from runtime.errors import InputError
from runtime.proto import pb
from runtime.ros.convert import Box2D, boxes_from_response

log = logging.getLogger("understudy.ros")
PENDING_LIMIT = 1024  # headers kept for frames in flight (answers come in frame order)
BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
ResultFn = Callable[[Any, list[Box2D], Any], None]  # (header, boxes, pb.DetectResponse)


@dataclass
class LinkCounts:
    """What happened to one camera's frames (read with ``CameraLink.counts``)."""

    received: int = 0  # frames offered by the subscription
    published: int = 0  # Detection2DArray messages published
    bridge_dropped: int = 0  # replaced in the slot, or offered while the server was away
    server_dropped: dict[str, int] = field(default_factory=dict)  # DropReason name -> count
    errors: int = 0  # frames the server refused (FrameError) or the bridge could not read
    reconnects: int = 0

    def line(self, topic: str) -> str:
        """One log line: "TOPIC: 300 received, 290 published, 10 dropped (...), 0 errors"."""
        server = sum(self.server_dropped.values())
        reasons = ", ".join(
            f"{k.removeprefix('DROP_REASON_').lower()} {v}"
            for k, v in sorted(self.server_dropped.items())
        )
        return (
            f"{topic}: {self.received} received, {self.published} published, "
            f"{self.bridge_dropped + server} dropped (bridge {self.bridge_dropped}, server "
            f"{server}{': ' + reasons if reasons else ''}), {self.errors} errors, "
            f"{self.reconnects} reconnects"
        )


class CameraLink:
    """The StreamDetect call of one input topic (see the module docstring)."""

    def __init__(
        self,
        client: DetectorClient,
        camera_id: str,
        on_result: ResultFn,
        *,
        budget_ms: float = 0.0,
        encode: str = "jpeg",
        jpeg_quality: int = 90,
        trace: Callable[[dict], None] | None = None,
    ) -> None:
        self._client, self.camera_id, self._on_result = client, camera_id, on_result
        self._budget_ms, self._encode, self._quality = budget_ms, encode, jpeg_quality
        self._trace = trace
        self._lock = threading.Lock()
        self._pending: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._call: StreamCall | None = None
        self._old_client_dropped = 0  # client_dropped of calls already closed
        self._purged = 0  # this call's frames found replaced in the slot (never answered)
        self._next_id = 0
        self._closed = threading.Event()
        self._counts = LinkCounts()
        self._thread = threading.Thread(
            target=self._run, name=f"understudy-ros-recv {camera_id}", daemon=True
        )

    def start(self) -> None:
        self._open()
        self._thread.start()

    def offer(self, payload: Any, header: Any, capture_time_ns: int) -> None:
        """Hand one frame to the sender (never blocks on the network). ``payload``: JPEG/PNG
        bytes (sent as they are) or a (H, W, 3) BGR / (H, W) uint8 array (encoded as
        ``encode`` on the sender thread); ``header`` is given back with its answer."""
        with self._lock:
            self._counts.received += 1
            call = self._call
            if call is None:
                self._counts.bridge_dropped += 1
                return
            frame_id = self._next_id
            self._next_id += 1
            self._pending[frame_id] = (header, time.time_ns())
            while len(self._pending) > PENDING_LIMIT:
                self._pending.popitem(last=False)
        try:
            call.send(payload, frame_id=frame_id, capture_time_ns=capture_time_ns)
        except InputError:  # the call was closed under us (reconnecting)
            with self._lock:
                self._pending.pop(frame_id, None)
                self._counts.bridge_dropped += 1

    def count_error(self) -> None:
        """A frame the node could not turn into a payload (bad encoding, bad size)."""
        with self._lock:
            self._counts.received += 1
            self._counts.errors += 1

    def counts(self) -> LinkCounts:
        """A snapshot of the counts (bridge drops include the slot's replaced frames)."""
        with self._lock:
            c = self._counts
            slot = self._old_client_dropped + (self._call.client_dropped if self._call else 0)
            return LinkCounts(
                c.received,
                c.published,
                c.bridge_dropped + slot,
                dict(c.server_dropped),
                c.errors,
                c.reconnects,
            )

    def close(self) -> None:
        """Stop: cancel the call (answers in flight are lost) and join the receiver."""
        self._closed.set()
        with self._lock:
            call, self._call = self._call, None
            if call is not None:
                self._old_client_dropped += call.client_dropped
        if call is not None:
            call.cancel()
        self._thread.join(timeout=5.0)

    def _open(self) -> None:
        call = self._client.open_stream(
            camera_id=self.camera_id,
            budget_ms=self._budget_ms,
            encode=self._encode,
            queue_size=1,
            jpeg_quality=self._quality,
        )
        with self._lock:
            self._call = call

    def _run(self) -> None:
        failures = 0
        while not self._closed.is_set():
            call = self._call
            if call is None:
                return
            try:
                for response in call:
                    self._handle(response)
                    failures = 0
                if self._closed.is_set():
                    return
                log.warning("%s: the server ended the stream; reopening", self.camera_id)
            except grpc.RpcError as e:
                if self._closed.is_set():
                    return
                log.warning("%s: stream failed (%s); reopening", self.camera_id, e.code().name)
            self._reopen(call, BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
            failures += 1

    def _reopen(self, old: StreamCall, backoff_s: float) -> None:
        with self._lock:
            self._call = None
            self._old_client_dropped += old.client_dropped
            # in flight when the call failed: pending, less those replaced in the slot
            lost = len(self._pending) - (old.client_dropped - self._purged)
            self._counts.bridge_dropped += max(0, lost)
            self._pending.clear()
            self._purged = 0
            self._counts.reconnects += 1
        old.cancel()
        if self._closed.wait(backoff_s):
            return
        self._open()

    def _handle(self, response: Any) -> None:
        answered_ns = time.time_ns()
        kind = response.WhichOneof("kind")
        item = getattr(response, kind)
        with self._lock:
            header, offered_ns = self._pending.pop(item.frame_id, (None, 0))
            # the server answers every frame it gets, in order: older ids still pending
            # were replaced in the slot (counted by the call's client_dropped)
            while self._pending and next(iter(self._pending)) < item.frame_id:
                self._pending.popitem(last=False)
                self._purged += 1
            if kind == "dropped":
                name = pb.DropReason.Name(item.reason)
                self._counts.server_dropped[name] = self._counts.server_dropped.get(name, 0) + 1
            elif kind == "error":
                self._counts.errors += 1
        if kind == "error":
            log.warning("%s: frame refused: %s", self.camera_id, item.message)
        if kind != "result" or header is None:
            return
        self._on_result(header, boxes_from_response(item), item)
        with self._lock:
            self._counts.published += 1
        if self._trace is not None:
            self._trace(
                {
                    "camera": self.camera_id,
                    "frame_id": int(item.frame_id),
                    "stamp_ns": item.capture_time.seconds * 1_000_000_000 + item.capture_time.nanos,
                    "server_total_ms": round(item.timings.total_ms, 4),
                    "offered_ns": offered_ns,  # the subscription callback offered it
                    "answered_ns": answered_ns,  # its answer arrived from the server
                    "published_ns": time.time_ns(),
                }
            )


class TraceFile:
    """Appends JSON lines (one per answered frame) to a file, from any thread."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def __call__(self, record: dict) -> None:
        with self._lock:
            self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()
