"""Client: frame building, the non-blocking send queue, stream accounting, `understudy stream`."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from runtime.cli import main
from runtime.client import DetectorClient, StreamCall, make_frame, timestamp_ns
from runtime.errors import InputError
from runtime.frames import decode_frame
from runtime.proto import pb
from runtime.stream_stats import StreamStats
from tests.runtime.serving_fakes import FakeDetector, running, solid

pytestmark = pytest.mark.timeout(30)


def test_make_frame_encodings_roundtrip() -> None:
    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    raw = make_frame(img, frame_id=3, camera_id="c", budget_ms=12, encode="raw", capture_time_ns=5)
    assert (raw.frame_id, raw.camera_id, raw.budget_ms, timestamp_ns(raw.capture_time)) == (
        3,
        "c",
        12,
        5,
    )
    np.testing.assert_array_equal(decode_frame(raw), img)
    png = make_frame(img, encode="png")
    assert png.encoded.format == pb.IMAGE_FORMAT_PNG
    np.testing.assert_array_equal(decode_frame(png), img)
    gray = make_frame(img[:, :, 0], encode="raw")
    assert gray.raw.pixel_format == pb.PIXEL_FORMAT_GRAY8
    assert make_frame(b"\xff\xd8\xff").encoded.data == b"\xff\xd8\xff"
    ready = pb.Frame(frame_id=9)
    assert make_frame(ready) is ready
    with pytest.raises(InputError, match="encode"):
        make_frame(img, encode="webp")
    with pytest.raises(InputError, match="uint8"):
        make_frame(img.astype(np.float32), encode="raw")


class _IdleStub:
    """A stub whose call never consumes the request iterator (a stalled network)."""

    def StreamDetect(self, requests, metadata=None):
        self.requests = requests
        return iter(())


def test_send_never_blocks_and_drops_oldest_when_full() -> None:
    stub = _IdleStub()
    call = StreamCall(
        SimpleNamespace(_stub=stub, _metadata=()),
        camera_id="c",
        budget_ms=0,
        encode="raw",
        queue_size=2,
        jpeg_quality=90,
    )
    for i in range(5):
        assert call.send(solid(i, 4, 4)) == i
    assert call.client_dropped == 3
    call.close()
    sent = list(stub.requests)
    assert [f.frame_id for f in sent] == [3, 4] and call.sent == 2
    with pytest.raises(InputError, match="closed"):
        call.send(solid(0))


def _result(frame_id: int, capture_ns: int, total: float, infer: float, budget: float = 33.0):
    r = pb.StreamResponse()
    r.result.frame_id = frame_id
    r.result.capture_time.seconds, r.result.capture_time.nanos = divmod(capture_ns, 10**9)
    r.result.timings.total_ms, r.result.timings.infer_ms = total, infer
    r.result.budget_ms, r.result.budget_met = budget, total <= budget
    return r


def test_stream_stats_summary() -> None:
    stats = StreamStats()
    for i, e2e_ms in enumerate([10.0, 20.0, 30.0, 40.0]):
        stats.record(
            _result(i, 1_000_000_000, total=e2e_ms - 2, infer=5.0),
            arrived_ns=1_000_000_000 + int(e2e_ms * 1e6),
        )
    drop = pb.StreamResponse(dropped=pb.DropNotice(frame_id=9, reason=pb.DROP_REASON_SUPERSEDED))
    stats.record(drop)
    stats.record(pb.StreamResponse(error=pb.FrameError(frame_id=10, code=3)))
    s = stats.summary(sent=6, elapsed_s=2.0)
    assert (s["answered"], s["dropped"], s["errors"], s["delivered_fps"]) == (4, 1, 1, 2.0)
    assert s["dropped_by_reason"] == {"DROP_REASON_SUPERSEDED": 1}
    assert s["drop_rate"] == 0.2
    assert s["e2e_p50_ms"] == pytest.approx(25.0, abs=1e-3)
    assert s["overhead_p50_ms"] == pytest.approx(20.0, abs=1e-3)
    assert s["server_overhead_p50_ms"] == pytest.approx(18.0, abs=1e-3)
    assert s["budget_miss_rate"] == 0.25 and s["server_budget_miss_rate"] == 0.25
    other = StreamStats()
    other.record(drop)
    stats.merge(other)
    assert stats.summary()["dropped"] == 2


def test_stream_command_folder_to_annotated_video(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:03d}.png"), solid(i * 40, 48, 64))
    out, summary = tmp_path / "annotated.avi", tmp_path / "summary.json"
    with running(FakeDetector()) as (srv, _client):
        priorities: list[int] = []
        submit = srv.scheduler.submit
        srv.scheduler.submit = lambda lane, job: (
            priorities.append(job.priority),
            submit(lane, job),
        )
        rc = main(
            [
                "stream",
                str(folder),
                "--server",
                f"127.0.0.1:{srv.port}",
                "--fps",
                "60",
                "--budget-ms",
                "5000",
                "--out",
                str(out),
                "--json",
                str(summary),
                "--priority",
                "2",
            ]
        )
    assert rc == 0
    assert priorities == [2] * 6  # --priority reaches the scheduler with every frame
    s = json.loads(summary.read_text())
    assert s["sent"] == 6 and s["answered"] + s["dropped"] == 6 and s["errors"] == 0
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()


def test_stream_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stream", str(tmp_path / "missing.mp4"), "--server", "127.0.0.1:1"]) == 2
    assert "no such video file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["stream", str(empty)]) == 2
    folder = tmp_path / "one"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), solid(1))
    args = ["stream", str(folder), "--server", "127.0.0.1:1", "--fps", "100"]
    assert main([*args, "--wait-ready", "0"]) == 2  # no wait: the stream itself fails
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert main([*args, "--wait-ready", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "127.0.0.1:1 is not ready after 0.5 s" in err[0]


def test_wait_ready_waits_for_serving() -> None:
    import socket
    import threading

    from runtime.client import DetectorClient
    from runtime.server import build_server
    from runtime.server_config import ServerConfig
    from tests.runtime.serving_fakes import FakeDetector

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with DetectorClient(f"127.0.0.1:{port}", timeout=1) as client:
        assert not client.wait_ready(0.5)  # nothing listening
        gate = threading.Event()
        server = build_server(FakeDetector(warmup_gate=gate), ServerConfig(port=port))
        try:
            assert not client.wait_ready(0.5)  # listening, model still warming up
            threading.Timer(0.3, gate.set).start()
            assert client.wait_ready(10)
        finally:
            gate.set()
            server.stop(0.5)


def test_stream_loop_repeats_a_folder_until_duration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "three"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), solid(10 * (i + 1), 48, 64))
    ids: list[int] = []
    send = StreamCall.send

    def recording_send(self, image, frame_id=None, **kw):
        ids.append(frame_id)
        return send(self, image, frame_id=frame_id, **kw)

    monkeypatch.setattr(StreamCall, "send", recording_send)
    summary = tmp_path / "summary.json"
    detector = FakeDetector()
    with running(detector) as (srv, _client):
        args = ["stream", str(folder), "--server", f"127.0.0.1:{srv.port}", "--fps", "40"]
        rc = main([*args, "--encode", "png", "--loop", "--duration", "0.5", "--json", str(summary)])
    assert rc == 0
    s = json.loads(summary.read_text())
    assert 3 < s["sent"] <= 21 and s["sent"] == len(ids)  # 0.5 s at 40 FPS: 20 frames
    assert s["answered"] + s["dropped"] == s["sent"] and s["errors"] == 0
    assert ids == list(range(len(ids)))  # ids keep increasing across the repeats
    streamed = detector.seen_values[-len(ids) :]  # after the server's warm-up frames
    assert streamed == [10, 20, 30] * (len(ids) // 3) + [10, 20][: len(ids) % 3]


def test_stream_loop_stops_on_a_source_without_frames(tmp_path: Path) -> None:
    from runtime.commands.stream import looped

    assert list(looped(str(tmp_path / "none.mp4"), iter(()))) == []


def _sockets() -> int:
    """Open sockets of this process (fds that close while listed are skipped)."""
    n = 0
    for f in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{f}").startswith("socket:")
    return n


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
def test_own_connection_opens_a_tcp_connection_per_client() -> None:
    with running(FakeDetector()) as (srv, _client):
        target = f"127.0.0.1:{srv.port}"
        clients: list[DetectorClient] = []

        def connected(own: bool) -> int:
            before = _sockets()
            for _ in range(3):  # kept open until the end: no socket closes meanwhile
                clients.append(DetectorClient(target, own_connection=own))
                clients[-1].detect(solid(1))
            return _sockets() - before

        shared, own = connected(False), connected(True)
        for c in clients:
            c.close()
    assert own >= 6 and own > shared  # 3 client ends + 3 server ends of their own
