"""Helpers for the gRPC service tests: a fake detector, servers, certificates.

``FakeDetector`` has the ``runtime.pipeline.Detector`` API without a model: every image
gets one box covering its top-left quarter, with class ``image[0, 0] % num_classes`` and
score ``0.5``; ``detect_batch`` sleeps ``delay_s`` per call (to make the model "busy"),
or ``delays[tag]`` when a frame of the call is tagged ``tag`` (its ``[0, 0]`` pixel);
``ballast_mb`` MiB of memory are allocated and written when it is created (a model of a
known resident size).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from runtime.client import DetectorClient
from runtime.model_spec import ModelSpec
from runtime.server import RunningServer, build_server
from runtime.server_config import ServerConfig
from runtime.types import Detections, StageTimings

CLASS_NAMES = ("person", "car", "dog")


class FakeDetector:
    """Detector stand-in (see the module docstring)."""

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        max_batch: int = 1,
        warmup_gate: threading.Event | None = None,
        fail_value: int | None = None,
        delays: dict[int, float] | None = None,
        ballast_mb: float = 0.0,
    ) -> None:
        self.spec = ModelSpec(
            class_names=CLASS_NAMES, input_size=(32, 32), model_hash="fakehash", preset="fake"
        )
        self.backend_name = "fake"
        self.precision = "fp32"
        self.max_batch = max_batch
        self.delay_s = delay_s
        self.delays = dict(delays or {})  # frame tag -> seconds a call with it takes
        # np.ones writes every page (np.zeros would map untouched, non-resident pages)
        self.ballast = np.ones(int(ballast_mb * 2**20), np.uint8)
        self.warmup_gate = warmup_gate
        self.fail_value = fail_value  # images whose [0, 0] pixel equals this raise
        self.gate: threading.Event | None = None  # when set, model calls wait for it
        self.started = threading.Event()  # set when a model call begins
        self.batches: list[int] = []
        self.seen_values: list[int] = []
        self.shapes: list[tuple[int, ...]] = []
        self.closed = False

    def warmup(self, n: int = 3) -> None:
        if self.warmup_gate is not None:
            self.warmup_gate.wait(10)

    def detect(self, image: np.ndarray) -> tuple[Detections, StageTimings]:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list[np.ndarray]) -> list[tuple[Detections, StageTimings]]:
        t0 = time.perf_counter()
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        delay = max(
            (self.delays.get(int(image.reshape(-1)[0]), self.delay_s) for image in images),
            default=self.delay_s,
        )
        if delay:
            time.sleep(delay)
        self.batches.append(len(images))
        out = []
        for image in images:
            value = int(image.reshape(-1)[0])
            self.seen_values.append(value)
            self.shapes.append(image.shape)
            if value == self.fail_value:
                raise RuntimeError("fake model failure")
            h, w = image.shape[:2]
            dets = Detections(
                np.array([[0, 0, w / 2, h / 2]], np.float32),
                np.array([0.5], np.float32),
                np.array([value % len(CLASS_NAMES)], np.int32),
            )
            ms = (time.perf_counter() - t0) * 1000.0
            out.append((dets, StageTimings(infer_ms=ms, total_ms=ms)))
        return out

    def close(self) -> None:
        self.closed = True


def solid(value: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A (h, w, 3) uint8 BGR image filled with ``value`` (its [0, 0] pixel tags it)."""
    return np.full((h, w, 3), value, np.uint8)


def make_self_signed(folder: Path) -> tuple[Path, Path] | None:
    """(cert.pem, key.pem) for localhost/127.0.0.1 via openssl, or None if unavailable."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = folder / "cert.pem", folder / "key.pem"
    cmd = [
        openssl,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ]
    result = subprocess.run(cmd, capture_output=True, timeout=30)
    if result.returncode != 0:
        return None
    return cert, key


@contextmanager
def running(
    detector: object, client_kw: dict | None = None, **config: object
) -> Iterator[tuple[RunningServer, DetectorClient]]:
    """An in-process server on an ephemeral port (warm) and a client for it. The default
    frame budget is generous (10 s) unless a test sets ``budget_ms``: tests about budgets
    say so, and the others must not drop frames on a busy CI machine."""
    config.setdefault("budget_ms", 10_000.0)
    server = build_server(detector, ServerConfig(port=0, **config))  # type: ignore[arg-type]
    client = None
    try:
        assert server.wait_ready(10), "fake model did not become ready"
        client = DetectorClient(f"127.0.0.1:{server.port}", timeout=10, **(client_kw or {}))
        yield server, client
    finally:
        if client is not None:
            client.close()
        server.stop(0.5)


def metric(server: RunningServer, name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of one sample of the server's metrics (0.0 if absent)."""
    value = server.metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it is true; AssertionError after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def kinds(responses: list) -> list[tuple[int, str]]:
    """[(frame_id, "result" | "dropped:REASON" | "error:CODE"), ...] of StreamResponses."""
    from runtime.proto import pb

    out = []
    for r in responses:
        kind = r.WhichOneof("kind")
        body = getattr(r, kind)
        if kind == "dropped":
            kind = "dropped:" + pb.DropReason.Name(body.reason).removeprefix("DROP_REASON_")
        elif kind == "error":
            kind = f"error:{body.code}"
        out.append((body.frame_id, kind))
    return out


def hold(det: FakeDetector) -> threading.Event:
    """Make the next model calls block until the returned event is set."""
    det.started.clear()
    det.gate = threading.Event()
    return det.gate


def build_constant_onnx(path: Path, spec: ModelSpec) -> Path:
    """A ``decoded_xyxy`` Understudy ONNX (dynamic batch) that predicts, for every image,
    one confident box of class 1 at network-input pixels (8, 8, 40, 40) and nothing else;
    it carries ``spec.to_metadata_props()``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w = spec.input_size
    a, c = spec.num_anchors, spec.num_classes
    boxes = np.zeros((1, a, 4), np.float32)
    boxes[0, :, 2:] = 1.0
    boxes[0, 0] = (8, 8, 40, 40)
    scores = np.zeros((1, a, c), np.float32)
    scores[0, 0, 1] = 0.9
    inits = [
        numpy_helper.from_array(boxes, "const_boxes"),
        numpy_helper.from_array(scores, "const_scores"),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape_b11"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [  # batch-shaped zeros added to the constants make the batch dynamic
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["m", "zero"], ["m0"]),
        helper.make_node("Reshape", ["m0", "shape_b11"], ["z"]),
        helper.make_node("Add", ["const_boxes", "z"], ["boxes"]),
        helper.make_node("Add", ["const_scores", "z"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, h, w])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", a, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", a, c]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    helper.set_model_props(model, spec.to_metadata_props())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
