"""A small Python client for the ``understudy.v1.Detector`` service.

    with DetectorClient("127.0.0.1:50051", token=..., tls_ca="ca.pem") as client:
        response = client.detect(image_bgr, frame_id=1, budget_ms=33)
        for r in client.stream(frames):           # frames: iterable of images
            ...                                   # pb.StreamResponse, one per frame

Streaming is open loop: ``StreamCall.send`` only puts the frame in a small bounded queue
and returns at once; gRPC's sender thread encodes and sends it. When the network (or the
server) falls behind and the queue is full, the *oldest* queued frame is discarded and
counted in ``StreamCall.client_dropped``, like a camera that keeps only fresh frames.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.errors import ConfigError, InputError
from runtime.frames import encode_image
from runtime.proto import pb, pb_grpc

ENCODINGS = ("jpeg", "png", "raw")
Image = np.ndarray | bytes | pb.Frame


def make_frame(
    image: Image,
    *,
    frame_id: int = 0,
    camera_id: str = "",
    budget_ms: float = 0.0,
    encode: str = "jpeg",
    capture_time_ns: int | None = None,
    jpeg_quality: int = 90,
) -> pb.Frame:
    """Build a Frame from a (H, W, 3) BGR / (H, W) gray uint8 array, JPEG/PNG bytes, or
    a ready Frame (returned unchanged). ``encode``: "jpeg", "png" or "raw" pixels."""
    if isinstance(image, pb.Frame):
        return image
    if encode not in ENCODINGS:
        raise InputError(f"encode must be one of {ENCODINGS}, got {encode!r}")
    ns = time.time_ns() if capture_time_ns is None else int(capture_time_ns)
    frame = pb.Frame(frame_id=frame_id, camera_id=camera_id, budget_ms=budget_ms)
    frame.capture_time.seconds, frame.capture_time.nanos = divmod(ns, 1_000_000_000)
    if isinstance(image, bytes | bytearray | memoryview):
        frame.encoded.data = bytes(image)
    elif encode == "raw":
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise InputError(
                f"raw frames must be (H, W[, 3]) uint8, got {image.shape} {image.dtype}"
            )
        gray = image.ndim == 2
        frame.raw.data = np.ascontiguousarray(image).tobytes()
        frame.raw.height, frame.raw.width = image.shape[:2]
        frame.raw.pixel_format = pb.PIXEL_FORMAT_GRAY8 if gray else pb.PIXEL_FORMAT_BGR8
    else:
        frame.encoded.data = encode_image(image, encode, jpeg_quality)
        frame.encoded.format = pb.IMAGE_FORMAT_JPEG if encode == "jpeg" else pb.IMAGE_FORMAT_PNG
    return frame


def timestamp_ns(ts: Any) -> int:
    """A google.protobuf.Timestamp as integer nanoseconds since the epoch."""
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)


_CLOSE = object()


class StreamCall:
    """An open StreamDetect call: ``send`` frames, iterate responses (pb.StreamResponse)."""

    def __init__(
        self,
        client: DetectorClient,
        *,
        camera_id: str,
        budget_ms: float,
        encode: str,
        queue_size: int,
        jpeg_quality: int,
        priority: int = 0,
    ) -> None:
        self._camera_id, self._budget_ms, self._encode = camera_id, budget_ms, encode
        self._priority = priority  # the stream's weight under overload (docs/protocol.md)
        self._quality = jpeg_quality
        self._queue: collections.deque[Any] = collections.deque()
        self._queue_size = queue_size
        self._cv = threading.Condition()
        self._next_id = 0
        self._closed = False
        self.sent = 0  # frames handed to gRPC
        self.client_dropped = 0  # frames discarded because the local queue was full
        self._call = client._stub.StreamDetect(self._requests(), metadata=client._metadata)

    def send(
        self,
        image: Image,
        *,
        frame_id: int | None = None,
        capture_time_ns: int | None = None,
        budget_ms: float | None = None,
        block: bool = False,
    ) -> int:
        """Queue one frame; returns its frame id. When the queue is full the oldest
        queued frame is discarded (``block=False``) or the call waits for room
        (``block=True``). The capture time defaults to now (the client's clock)."""
        with self._cv:
            while block and not self._closed and len(self._queue) >= self._queue_size:
                self._cv.wait()
            if self._closed:
                raise InputError("this stream is closed; open a new one to send more frames")
            if frame_id is None:
                frame_id = self._next_id
            self._next_id = frame_id + 1
            ns = time.time_ns() if capture_time_ns is None else capture_time_ns
            budget = self._budget_ms if budget_ms is None else budget_ms
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.client_dropped += 1
            self._queue.append((image, frame_id, ns, budget))
            self._cv.notify()
        return frame_id

    def close(self) -> None:
        """No more frames: the server answers the ones sent, then ends the stream."""
        with self._cv:
            if not self._closed:
                self._closed = True
                self._queue.append(_CLOSE)
                self._cv.notify_all()

    def cancel(self) -> None:
        """Abort the call now (pending answers are lost)."""
        with self._cv:
            self._closed = True
            self._queue.clear()
            self._queue.append(_CLOSE)
            self._cv.notify_all()
        self._call.cancel()

    def _requests(self) -> Iterator[pb.Frame]:
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                item = self._queue.popleft()
                self._cv.notify_all()
            if item is _CLOSE:
                return
            image, frame_id, ns, budget = item
            self.sent += 1
            frame = make_frame(
                image,
                frame_id=frame_id,
                camera_id=self._camera_id,
                budget_ms=budget,
                encode=self._encode,
                capture_time_ns=ns,
                jpeg_quality=self._quality,
            )
            frame.priority = self._priority
            yield frame

    def __iter__(self) -> Iterator[pb.StreamResponse]:
        return iter(self._call)

    def __enter__(self) -> StreamCall:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class DetectorClient:
    """Client of one server. ``token``: bearer token; ``tls_ca``: PEM file of the CA (or
    self-signed certificate) to trust, enabling TLS; ``timeout``: seconds per unary call;
    ``own_connection``: open a TCP connection of its own (by default gRPC may share one
    between the channels of a process to the same server)."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls_ca: str | None = None,
        timeout: float | None = None,
        max_message_mb: float = 16.0,
        tls_server_name: str | None = None,
        own_connection: bool = False,
    ) -> None:
        max_bytes = int(max_message_mb * 1024 * 1024)
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
        ]
        if own_connection:  # else gRPC may share one TCP connection among a process's channels
            options.append(("grpc.use_local_subchannel_pool", 1))
        if tls_ca is not None:
            try:
                ca = Path(tls_ca).read_bytes()
            except OSError as e:
                raise ConfigError(f"--tls-ca {tls_ca}: cannot be read ({e.strerror})") from e
            if tls_server_name:
                options.append(("grpc.ssl_target_name_override", tls_server_name))
            creds = grpc.ssl_channel_credentials(root_certificates=ca)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._stub = pb_grpc.DetectorStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def detect(
        self,
        image: Image,
        *,
        frame_id: int = 0,
        camera_id: str = "",
        budget_ms: float = 0.0,
        encode: str = "jpeg",
        capture_time_ns: int | None = None,
    ) -> pb.DetectResponse:
        """One frame, one answer (raises grpc.RpcError with the server's status)."""
        frame = make_frame(
            image,
            frame_id=frame_id,
            camera_id=camera_id,
            budget_ms=budget_ms,
            encode=encode,
            capture_time_ns=capture_time_ns,
        )
        return self._stub.Detect(frame, timeout=self.timeout, metadata=self._metadata)

    def open_stream(
        self,
        *,
        camera_id: str = "",
        budget_ms: float = 0.0,
        encode: str = "jpeg",
        queue_size: int = 8,
        jpeg_quality: int = 90,
        priority: int = 0,
    ) -> StreamCall:
        """Open a StreamDetect call to ``send`` frames to (see :class:`StreamCall`);
        ``priority``: the stream's weight under overload (0 = normal, see docs/protocol.md)."""
        return StreamCall(
            self,
            camera_id=camera_id,
            budget_ms=budget_ms,
            encode=encode,
            queue_size=queue_size,
            jpeg_quality=jpeg_quality,
            priority=priority,
        )

    def stream(
        self,
        frames: Iterable[Image],
        *,
        camera_id: str = "",
        budget_ms: float = 0.0,
        encode: str = "jpeg",
        queue_size: int = 8,
    ) -> StreamCall:
        """Send ``frames`` (consumed by a background thread, ids 0, 1, ...; the thread
        waits when the send queue is full, so no frame is lost on the client) and
        iterate the responses from the returned call."""
        call = self.open_stream(
            camera_id=camera_id, budget_ms=budget_ms, encode=encode, queue_size=queue_size
        )

        def pump() -> None:
            try:
                for image in frames:
                    call.send(image, block=True)
            except InputError:
                pass  # the call was cancelled
            finally:
                call.close()

        threading.Thread(target=pump, name="understudy-client-pump", daemon=True).start()
        return call

    def model_info(self) -> pb.ModelInfo:
        return self._stub.GetModelInfo(
            pb.ModelInfoRequest(), timeout=self.timeout, metadata=self._metadata
        )

    def health(self, service: str = "") -> str:
        """ "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" or "UNKNOWN"."""
        response = self._health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_ready(self, timeout_s: float, poll_s: float = 0.2) -> bool:
        """Wait until the server's health says SERVING (a server still loading or warming
        up its model says NOT_SERVING; one not listening yet is UNAVAILABLE): True when it
        does within ``timeout_s``, False otherwise. Other errors (e.g. TLS) propagate."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.health() == "SERVING":
                    return True
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
            if time.monotonic() + poll_s > deadline:
                return False
            time.sleep(poll_s)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> DetectorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
