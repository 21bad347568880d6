"""``understudy stream SOURCE --server HOST:PORT``: stream frames like a camera.

SOURCE is a video file (e.g. the synthetic video), a camera index (``0``) or a folder of
images. Frames are sent open loop at ``--fps`` (each at its capture time, whatever the
answers do); live FPS / latency / drops are shown while streaming, a summary at the end,
and ``--out`` writes the annotated video (one output frame per input frame; dropped
frames are marked). ``--loop`` repeats a video file or image folder until ``--duration``
or Ctrl-C (frame ids keep increasing across the repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.video import VideoSink

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stream",
        help="stream a video, camera or image folder to a server",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument("source", help="video file, camera index or folder of images")
    p.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of `understudy serve`")
    p.add_argument(
        "--fps",
        type=float,
        default=None,
        help="send rate (default: the video's rate, 30 for folders)",
    )
    p.add_argument("--budget-ms", type=float, default=0.0, help="per-frame budget (0 = server's)")
    p.add_argument("--token", default=None, help="bearer token (default: $UNDERSTUDY_TOKEN)")
    p.add_argument("--tls-ca", default=None, help="PEM CA/certificate to trust (enables TLS)")
    p.add_argument("--encode", choices=("jpeg", "png", "raw"), default="jpeg")
    p.add_argument("--camera-id", default="", help="camera id sent with every frame")
    p.add_argument(
        "--priority",
        type=int,
        default=0,
        help="this stream's weight when the server is overloaded: priority p gets up to 1 + p "
        "times the frames of a priority-0 stream (0 = normal)",
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument(
        "--loop",
        action="store_true",
        help="repeat a video file or image folder until --duration or Ctrl-C "
        "(a camera ignores it: it never ends)",
    )
    p.add_argument(
        "--wait-ready",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wait this long for the server to be ready (listening, model warm) before "
        "sending (default 60; 0: do not wait)",
    )
    p.add_argument("--out", default=None, help="write the annotated video here (.mp4/.avi)")
    p.add_argument("--json", default=None, help="write the final summary as JSON here")
    p.set_defaults(func=run)


def open_source(source: str):  # -> tuple[Iterator[np.ndarray], float | None]
    """(frames, native fps or None) for a camera index, image folder or video file."""
    import cv2

    from runtime.errors import DataError

    path = Path(source)
    if is_camera(source):
        cap = cv2.VideoCapture(int(source))
        if not cap.isOpened():
            raise DataError(f"camera {source}: cannot be opened (is it connected?)")
        return _read_capture(cap), None
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return _read_images(files), None
    if not path.exists():
        raise DataError(f"{path}: no such video file, image folder or camera index")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: cannot be opened as a video")
    fps = cap.get(cv2.CAP_PROP_FPS)
    return _read_capture(cap), (fps if fps and fps > 0 else None)


def is_camera(source: str) -> bool:
    """Whether ``source`` names a camera index (a number that is no file or folder)."""
    return source.isdigit() and not Path(source).exists()


def looped(source: str, first: Iterator[Any]) -> Iterator[Any]:
    """The frames of ``first`` (``open_source(source)``'s), then of the file source opened
    again each time it ends, for ever; stops if a pass yields no frame."""
    frames = first
    while True:
        empty = True
        for image in frames:
            empty = False
            yield image
        if empty:
            return
        frames, _ = open_source(source)


def _read_capture(cap):
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def _read_images(files):
    import cv2

    from runtime.errors import DataError

    for f in files:
        image = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"{f}: not a readable image")
        yield image


def annotate(image, response):  # (H, W, 3) BGR uint8, pb.StreamResponse -> annotated copy
    """Draw a StreamResponse on its frame: boxes and labels, or the drop/error reason."""
    import cv2

    from runtime.proto import pb

    out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    kind = response.WhichOneof("kind")
    if kind == "result":
        for d in response.result.detections:
            p1, p2 = (int(d.x1), int(d.y1)), (int(d.x2), int(d.y2))
            cv2.rectangle(out, p1, p2, (0, 255, 0), 2)
            cv2.putText(
                out,
                f"{d.label or d.class_id} {d.score:.2f}",
                (p1[0], max(12, p1[1] - 4)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                (0, 255, 0),
                1,
                cv2.LINE_AA,
            )
        text = f"{response.result.timings.total_ms:.1f} ms"
    elif kind == "dropped":
        text = f"dropped: {pb.DropReason.Name(response.dropped.reason)}"
    else:
        text = f"error: {response.error.message[:60]}"
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1, cv2.LINE_AA)
    return out


class _Receiver:
    """Reads the answers of ``call`` on a thread into ``stats`` and, with ``video``, writes
    each answered frame (kept by :meth:`keep` when sent) annotated. An error (the server
    gone, auth, a write error) ends it and is kept in ``failure``."""

    def __init__(self, call: Any, stats: Any, video: VideoSink | None) -> None:
        self.call, self.stats, self.video = call, stats, video
        self.failure: list[BaseException] = []
        self._kept: OrderedDict[int, Any] = OrderedDict()  # frame id -> image, for --out
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name="understudy-stream-recv", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def keep(self, frame_id: int, image: Any) -> None:
        """Remember a sent frame's image for the video (the last 256)."""
        if self.video is None:
            return
        with self._lock:
            self._kept[frame_id] = image
            while len(self._kept) > 256:
                self._kept.popitem(last=False)

    def _run(self) -> None:
        try:
            for response in self.call:
                self.stats.record(response)
                if self.video is not None:
                    kind = response.WhichOneof("kind")
                    with self._lock:
                        image = self._kept.pop(getattr(response, kind).frame_id, None)
                    if image is not None:
                        self.video.write(annotate(image, response))
        except Exception as e:  # grpc.RpcError (server gone, auth) or a write error
            self.failure.append(e)

    def finish(self) -> None:
        """Wait for the last answers (cancel the call after 10 s), then close the video."""
        self._thread.join(timeout=10.0)
        if self._thread.is_alive():
            self.call.cancel()
        if self.video is not None:
            self.video.close()


def _send_paced(
    frames: Iterator[Any],
    fps: float,
    start: float,
    duration: float | None,
    receiver: _Receiver,
    sent_one: Callable[[int], None],
) -> int:
    """Send ``frames`` open loop, frame ``i`` at ``start + i / fps`` (perf_counter s), until
    they end, ``duration`` passes, the receiver fails or Ctrl-C; ``sent_one(i)`` after each.
    Returns the number sent."""
    sent = 0
    try:
        for i, image in enumerate(frames):
            due = start + i / fps
            if duration is not None and due - start >= duration:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if receiver.failure:
                break
            receiver.keep(i, image)
            receiver.call.send(image, frame_id=i)
            sent += 1
            sent_one(i)
    except KeyboardInterrupt:
        print("understudy stream: interrupted, finishing", flush=True)
    return sent


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from runtime.client import DetectorClient
    from runtime.errors import ConfigError, UnderstudyError
    from runtime.files import write_json_atomic
    from runtime.stream_stats import StreamStats
    from runtime.video import VideoSink

    if args.fps is not None and args.fps <= 0:
        raise ConfigError(f"--fps must be > 0, got {args.fps}")
    frames, native_fps = open_source(args.source)
    if args.loop and is_camera(args.source):
        print(f"understudy stream: --loop ignored for camera {args.source}", flush=True)
    elif args.loop:
        frames = looped(args.source, frames)
    fps = args.fps or native_fps or 30.0
    token = args.token if args.token is not None else os.environ.get("UNDERSTUDY_TOKEN") or None
    stats = StreamStats()
    video = VideoSink(args.out, fps) if args.out else None

    with DetectorClient(args.server, token=token, tls_ca=args.tls_ca) as client:
        if args.wait_ready > 0 and not client.wait_ready(args.wait_ready):
            raise UnderstudyError(
                f"the server at {args.server} is not ready after {args.wait_ready:g} s (not "
                "listening, or still loading its model): start `understudy serve` there, or "
                "raise --wait-ready"
            )
        call = client.open_stream(
            camera_id=args.camera_id,
            budget_ms=args.budget_ms,
            encode=args.encode,
            priority=args.priority,
        )
        receiver = _Receiver(call, stats, video)
        receiver.start()
        sent = 0
        start = time.perf_counter()
        bar = tqdm(desc=f"stream -> {args.server}", unit="frame", dynamic_ncols=True)

        def sent_one(i: int) -> None:
            bar.update(1)
            if i % 10 == 0:
                bar.set_postfix(stats.live(), refresh=False)

        try:
            sent = _send_paced(frames, fps, start, args.duration, receiver, sent_one)
        finally:
            bar.close()
            call.close()
            receiver.finish()
    elapsed = time.perf_counter() - start
    summary = stats.summary(sent=sent, elapsed_s=elapsed)
    summary["client_dropped"] = call.client_dropped
    print(json.dumps(summary, indent=2))
    if args.json:
        write_json_atomic(args.json, summary, indent=2)
    if receiver.failure:
        raise UnderstudyError(
            f"the stream to {args.server} failed: {_describe(receiver.failure[0])}"
        )
    return 0


def _describe(error: BaseException) -> str:
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return str(error)
