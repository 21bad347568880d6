"""The load side of the stream benchmark (``benchmarks/stream.py``): the frames, a server
in another process, and one open-loop camera stream."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runtime.client import DetectorClient  # noqa: E402
from runtime.frames import encode_image  # noqa: E402
from runtime.stream_stats import StreamStats  # noqa: E402


def bench_frames(width: int, height: int, video: Path | None, n: int = 30) -> list[bytes]:
    """``n`` JPEG frames (quality 90): from ``video`` or synthetic shapes on noise."""
    images = []
    if video is not None:
        cap = cv2.VideoCapture(str(video))
        while len(images) < n:
            ok, frame = cap.read()
            if not ok:
                break
            images.append(cv2.resize(frame, (width, height)))
        cap.release()
        if not images:
            raise SystemExit(f"{video}: no frames could be read")
    rng = np.random.default_rng(0)
    while len(images) < n:
        img = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        for _ in range(6):
            color = tuple(int(c) for c in rng.integers(60, 256, 3))
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            s = int(rng.integers(10, min(width, height) // 3))
            cv2.rectangle(img, (x, y), (x + s, y + s // 2 + 5), color, -1)
        images.append(img)
    return [encode_image(img, "jpeg", 90) for img in images]


class Server:
    """``understudy serve`` in a subprocess; the port is read from its output."""

    def __init__(self, args: list[str]) -> None:
        cmd = [sys.executable, "-m", "runtime.cli", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.target = self._wait("listening on").strip().rsplit(" ", 1)[-1]
        self._wait("ready")

    def _pump(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)

    def _wait(self, text: str, timeout: float = 300.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.log.append(line)
            if text in line:
                return line
        raise SystemExit("server did not start:\n" + "".join(self.log))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


def run_stream(
    target: str,
    frames: list[bytes],
    fps: float,
    offset: float,
    t0: float,
    duration: float,
    budget_ms: float,
    stats: StreamStats,
    out: dict,
) -> None:
    """One camera: open-loop sender (this thread) and a receiver thread."""
    client = DetectorClient(target)
    call = client.open_stream(camera_id=f"cam{offset:.4f}", budget_ms=budget_ms, queue_size=8)
    errors: list[str] = []

    def receive() -> None:
        try:
            for response in call:
                stats.record(response)
        except Exception as e:  # the server died or refused the stream
            errors.append(repr(e))

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    sent, i = 0, 0
    while True:
        due = t0 + offset + i / fps
        if due - t0 >= duration:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        call.send(frames[i % len(frames)], frame_id=i)
        sent, i = sent + 1, i + 1
    call.close()
    receiver.join(30)
    out.update(sent=sent, client_dropped=call.client_dropped, errors=errors)
    client.close()
