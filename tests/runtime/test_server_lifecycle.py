"""Server life cycle as probes and operators see it: health Watch from NOT_SERVING through
SERVING to shutdown, a model that fails to load in the loader thread, and the grace limit
of a stop while the model is stuck."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.client import DetectorClient
from runtime.errors import ModelFileError
from runtime.server import build_server
from runtime.server_config import ServerConfig
from tests.runtime.serving_fakes import FakeDetector, solid

pytestmark = pytest.mark.timeout(60)
STATUS = health_pb2.HealthCheckResponse


def test_health_watch_follows_load_ready_and_shutdown() -> None:
    gate = threading.Event()
    server = build_server(FakeDetector(warmup_gate=gate), ServerConfig(port=0))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    seen: list[int] = []
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
    try:
        seen.append(next(watch).status)  # while the model warms up
        gate.set()
        seen.append(next(watch).status)  # ready
        threading.Thread(target=server.stop, args=(0.5,), daemon=True).start()
        seen.append(next(watch).status)  # graceful shutdown
    finally:
        gate.set()
        watch.cancel()
        channel.close()
        server.stop(0.5)
    assert seen == [STATUS.NOT_SERVING, STATUS.SERVING, STATUS.NOT_SERVING]


def test_corrupt_model_fails_in_the_loader_and_the_server_keeps_answering(
    tmp_path: Path,
) -> None:
    from runtime.pipeline import Detector

    bad = tmp_path / "student.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf model")
    server = build_server(lambda: Detector(bad), ServerConfig(port=0))
    try:
        with pytest.raises(ModelFileError, match=r"student\.onnx"):
            server.wait_ready(30)
        with DetectorClient(f"127.0.0.1:{server.port}", timeout=5) as client:
            assert client.health() == "NOT_SERVING"
            with pytest.raises(grpc.RpcError) as e:
                client.detect(solid(1))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert client.health() == "NOT_SERVING"  # still up, still answering probes
    finally:
        server.stop(0.5)


def test_stop_gives_up_on_a_stuck_model_after_the_grace_period() -> None:
    det = FakeDetector()
    server = build_server(det, ServerConfig(port=0, budget_ms=60_000))
    assert server.wait_ready(10)
    det.started.clear()
    det.gate = threading.Event()  # from now on every model call waits for it (at most 10 s)
    client = DetectorClient(f"127.0.0.1:{server.port}", timeout=30)
    codes: list[grpc.StatusCode] = []

    def call() -> None:
        try:
            client.detect(solid(1))
        except grpc.RpcError as e:
            codes.append(e.code())

    caller = threading.Thread(target=call)
    caller.start()
    assert det.started.wait(10)  # the model call is running, and stuck
    answered = len(det.batches)
    try:
        server.stop(0.2)  # returns after the grace period (+1 s per wait), not when it ends
        assert not det.gate.is_set() and len(det.batches) == answered  # still stuck
    finally:
        det.gate.set()
        caller.join(10)
        client.close()
    assert codes and codes[0] != grpc.StatusCode.OK  # the call was cut off, not answered
