"""The load side of the stream benchmark (used by ``benchmarks.stream`` only): its frames,
``understudy serve`` in another process with its memory sampled, and N open-loop camera
streams against it."""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.common import video_frames
from runtime.client import DetectorClient
from runtime.frames import encode_image
from runtime.measure import rss_mb, synthetic_frames
from runtime.stream_stats import StreamStats


def bench_frames(width: int, height: int, video: Path | None, n: int = 30) -> list[bytes]:
    """``n`` JPEG frames (quality 90) of ``width`` x ``height``: the first frames of
    ``video`` (fewer if it is shorter), else synthetic shapes on noise."""
    if video is None:
        images = synthetic_frames(width, height, n)
    else:
        images = [
            img if img.shape[1::-1] == (width, height) else cv2.resize(img, (width, height))
            for img in video_frames(video, n)
        ]
    return [encode_image(img, "jpeg", 90) for img in images]


# what ``RunningServer.stop`` logs about the model worker
WORKER_LINE = re.compile(
    r"model worker: (\d+) calls, ([\d.]+) s busy; (\d+) waits for a stream behind, ([\d.]+) s"
)


@contextlib.contextmanager
def cpu_load(seconds: float) -> Iterator[None]:
    """For the first ``seconds`` (0: none), another process keeps one core busy (a plain
    Python loop at normal priority), the way another program shares a robot's CPU."""
    hog = None
    if seconds > 0:
        code = (
            f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
        )
        hog = subprocess.Popen([sys.executable, "-c", code])
    try:
        yield
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()


def worker_view(stats: dict[str, float] | None, elapsed_s: float) -> dict:
    """The model worker's share of the run busy in calls, and its waits for a stream behind
    (``Server.worker_stats``; None values without them)."""
    if stats is None:
        return {"model_busy": None, "holds": None, "held_s": None}
    return {
        "model_busy": round(stats["busy_s"] / elapsed_s, 3) if elapsed_s > 0 else None,
        "holds": stats["holds"],
        "held_s": round(stats["held_s"], 2),
    }


class Server:
    """``understudy serve`` in a subprocess; the port is read from its output. While the
    streams run, :meth:`start_sampling` records its resident memory every 0.5 s."""

    def __init__(self, args: list[str]) -> None:
        cmd = [sys.executable, "-m", "runtime.cli", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.rss_samples: list[tuple[float, float]] = []  # (perf_counter s, MiB)
        self._sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        self._pumper = threading.Thread(target=self._pump, daemon=True)
        self._pumper.start()
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
        raise SystemExit("the server did not start:\n" + "".join(self.log))

    def rss_mb(self) -> float:
        """The server's resident memory now, MiB (0.0 where it cannot be read)."""
        return round(rss_mb(self.proc.pid) or 0.0, 1)

    def start_sampling(self) -> None:
        def sample() -> None:
            while not self._sampling.wait(0.5):
                mb = rss_mb(self.proc.pid)
                if mb is not None:
                    self.rss_samples.append((time.perf_counter(), mb))

        self._sampler = threading.Thread(target=sample, daemon=True)
        self._sampler.start()

    def stop_sampling(self) -> None:
        self._sampling.set()
        if self._sampler is not None:
            self._sampler.join()

    def stop(self) -> int:
        """SIGTERM (a graceful drain), SIGKILL after 30 s; returns the exit code. The
        server's output is then all in ``log``."""
        self.stop_sampling()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = -9
        self._pumper.join(5.0)
        while not self.lines.empty():
            self.log.append(self.lines.get_nowait())
        return code

    def worker_stats(self) -> dict[str, float] | None:
        """The model worker's counters from the line the server logs when it stops
        (after :meth:`stop`): calls, busy_s, holds, held_s; None without that line."""
        for line in reversed(self.log):
            m = WORKER_LINE.search(line)
            if m:
                calls, busy, holds, held = m.groups()
                return {
                    "calls": int(calls),
                    "busy_s": float(busy),
                    "holds": int(holds),
                    "held_s": float(held),
                }
        return None


@dataclass
class StreamResult:
    """What one camera stream saw: answers in ``stats``, frames sent, frames the client
    dropped before sending, and errors of the receiving side."""

    stats: StreamStats = field(default_factory=StreamStats)
    sent: int = 0
    client_dropped: int = 0
    errors: list[str] = field(default_factory=list)


def send_paced(call: Any, frames: list[bytes], fps: float, start: float, end: float) -> int:
    """Send frame ``i`` (cycling through ``frames``) at ``start + i / fps`` on the
    perf_counter clock until ``end``, whatever the answers do; returns how many were sent."""
    i = 0
    while (due := start + i / fps) < end:
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        call.send(frames[i % len(frames)], frame_id=i)
        i += 1
    return i


def run_stream(
    target: str,
    frames: list[bytes] | list[np.ndarray],
    fps: float,
    offset: float,
    t0: float,
    duration: float,
    budget_ms: float,
    out: StreamResult,
) -> None:
    """One camera: frame ``i`` leaves at ``t0 + offset + i / fps`` whatever the answers do
    (this thread); a receiver thread records the answers into ``out``. ``frames``: encoded
    bytes (sent as they are), or BGR arrays (sent as raw pixels)."""
    client = DetectorClient(target)
    encode = "raw" if isinstance(frames[0], np.ndarray) else "jpeg"
    call = client.open_stream(
        camera_id=f"cam{offset:.4f}", budget_ms=budget_ms, queue_size=8, encode=encode
    )

    def receive() -> None:
        try:
            for response in call:
                out.stats.record(response)
        except Exception as e:  # the server died or refused the stream
            out.errors.append(repr(e))

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    out.sent = send_paced(call, frames, fps, t0 + offset, t0 + duration)
    call.close()
    receiver.join(30)
    out.client_dropped = call.client_dropped
    client.close()


def run_streams(
    target: str,
    frames: list[bytes] | list[np.ndarray],
    streams: int,
    fps: float,
    duration: float,
    budget_ms: float,
) -> tuple[list[StreamResult], float, float]:
    """``streams`` cameras at ``fps`` each, staggered by ``1 / (streams * fps)``, for
    ``duration`` seconds: (one result per stream, ``t0`` = the first frame's due time on
    ``time.perf_counter``'s clock, seconds from ``t0`` to the end)."""
    results = [StreamResult() for _ in range(streams)]
    t0 = time.perf_counter() + 0.2
    threads = [
        threading.Thread(
            target=run_stream,
            args=(target, frames, fps, k / (fps * streams), t0, duration, budget_ms, results[k]),
        )
        for k in range(streams)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    return results, t0, time.perf_counter() - t0
