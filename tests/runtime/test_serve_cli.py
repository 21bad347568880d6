"""`understudy serve` as a separate process: readiness, graceful shutdown on signals."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runtime.cli import main
from runtime.client import DetectorClient
from tests.runtime.serving_fakes import build_constant_onnx, solid

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]
FAKE_SERVE = (
    "import sys; sys.path.insert(0, sys.argv[1]);"
    "from tests.runtime.serving_fakes import FakeDetector;"
    "from runtime.server import run_until_signal;"
    "from runtime.server_config import ServerConfig;"
    "sys.exit(run_until_signal(FakeDetector(delay_s=0.01), ServerConfig(port=0)))"
)


class ServeProcess:
    """A server subprocess whose stdout lines are collected on a thread."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {text!r} in server output: {self.seen}") from None
            self.seen.append(line)
            if text in line:
                return line

    def target(self) -> str:
        return self.wait_for("listening on").strip().rsplit(" ", 1)[-1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def test_sigterm_with_open_stream_exits_zero() -> None:
    server = ServeProcess([sys.executable, "-c", FAKE_SERVE, str(ROOT)])
    try:
        target = server.target()
        server.wait_for("ready")
        with DetectorClient(target, timeout=5) as client:
            assert client.health() == "SERVING"
            call = client.open_stream(budget_ms=10_000, encode="raw")
            responses = iter(call)
            call.send(solid(1))
            assert next(responses).HasField("result")
            server.proc.send_signal(signal.SIGTERM)
            assert list(responses) == []  # the stream ends cleanly when the server stops
        assert server.proc.wait(20) == 0
        server.wait_for("stopped")
    finally:
        server.kill()


def test_serve_missing_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", str(tmp_path / "nope.onnx"), "--port", "0"]) == 2
    assert "file not found" in capsys.readouterr().err


def test_real_detector_serve_sigint(tmp_path: Path) -> None:
    from runtime.model_spec import ModelSpec

    spec = ModelSpec(
        class_names=("person", "car", "dog"),
        input_size=(64, 64),
        output_layout="decoded_xyxy",
        preset="tiny",
        model_hash="abc123",
    )
    model = build_constant_onnx(tmp_path / "tiny.onnx", spec)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), UNDERSTUDY_TOKEN="tok")
    cmd = [
        sys.executable,
        "-m",
        "runtime.cli",
        "serve",
        "--model",
        str(model),
        "--port",
        "0",
        "--threads",
        "1",
        "--budget-ms",
        "1000",
        "--max-batch",
        "4",
    ]
    server = ServeProcess(cmd, env=env)
    try:
        target = server.target()
        server.wait_for("ready", timeout=60)
        with DetectorClient(target, timeout=10, token="tok") as client:
            info = client.model_info()
            assert list(info.class_names) == ["person", "car", "dog"]
            assert (info.input_height, info.input_width, info.backend) == (64, 64, "onnxruntime")
            assert info.model_hash == "abc123" and info.student_latency_p50_ms > 0
            assert info.max_batch == 4
            # 128x128 frame -> letterbox scale 0.5: the box (8, 8, 40, 40) maps to (16, 16, 80, 80)
            r = client.detect(solid(200, 128, 128), frame_id=5)
            assert r.frame_id == 5 and r.timings.infer_ms > 0
            (d,) = r.detections
            assert (d.label, d.class_id) == ("car", 1) and d.score == pytest.approx(0.9)
            assert [d.x1, d.y1, d.x2, d.y2] == pytest.approx([16, 16, 80, 80], abs=0.5)
            got = list(client.stream([solid(i * 50, 48, 64) for i in range(4)], budget_ms=1000))
            assert [getattr(g, g.WhichOneof("kind")).frame_id for g in got] == [0, 1, 2, 3]
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(30) == 0
    finally:
        server.kill()


def test_model_threads_leave_a_core_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.cli import build_parser
    from runtime.commands.serve import model_threads

    def threads(*flags: str) -> int | None:
        return model_threads(build_parser().parse_args(["serve", "--model", "m.onnx", *flags]))

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert threads() == 1  # 2 cores: one for the model, one for decoding and gRPC
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert threads() == 7
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert threads() == 1
    assert threads("--threads", "2") == 2
    assert threads("--threads", "0") is None  # the backend's own default
