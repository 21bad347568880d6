"""tritonclient.grpc (2.41.0, the side environment) against a real Understudy server:
wire compatibility of the protos, metadata and config, infer with a JPEG, a raw frame and
the ``_raw`` network, async infer, statistics, bad requests, UNIMPLEMENTED, the token, and
a stream whose dropped frames are still answered."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.frames import encode_image
from runtime.pipeline import Detector
from runtime.proto.inference import grpc_service_pb2 as kpb
from runtime.proto.inference import model_config_pb2 as mc
from tests.runtime.kserve.proto_shapes import describe
from tests.runtime.serving_fakes import FakeDetector, hold, metric, running, wait_until
from tests.runtime.tiny_models import build_conv_model, make_spec

pytestmark = pytest.mark.timeout(300)
CHECKS = Path(__file__).with_name("triton_checks.py")
TOKEN = "kserve-token"


def run_checks(python: Path, scenario: str, args: dict) -> dict:
    result = subprocess.run(
        [str(python), str(CHECKS), scenario, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"{CHECKS.name} {scenario} failed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_protos_are_wire_compatible_with_tritonclients(triton_python: Path) -> None:
    theirs = run_checks(triton_python, "descriptors", {})
    ours = describe([kpb, mc], kpb)
    assert ours["messages"], "no messages found"
    for message, fields in ours["messages"].items():
        assert message in theirs["messages"], f"{message} is not a Triton message"
        for name, spec in fields.items():
            assert theirs["messages"][message].get(name) == spec, f"{message}.{name}"
    for enum, values in ours["enums"].items():
        for name, number in values.items():
            assert theirs["enums"][enum].get(name) == number, f"{enum}.{name}"
    for method, types in ours["methods"].items():
        assert theirs["methods"][method] == types, method


def _detections(det: Detector, image: np.ndarray) -> np.ndarray:
    d, _ = det.detect(image)
    return np.concatenate([d.boxes, d.scores[:, None], d.class_ids[:, None]], 1)


def test_tritonclient_unary_calls(triton_python: Path, tmp_path: Path) -> None:
    model = build_conv_model(tmp_path / "tiny.onnx", make_spec())
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    jpeg = encode_image(image, "jpeg")
    batch = rng.random((2, 3, 64, 64), dtype=np.float32)
    (tmp_path / "frame.jpg").write_bytes(jpeg)
    np.save(tmp_path / "frame.npy", image)
    np.save(tmp_path / "batch.npy", batch)
    args = {
        "model": "tiny",
        "token": TOKEN,
        "jpeg": str(tmp_path / "frame.jpg"),
        "frame": str(tmp_path / "frame.npy"),
        "batch": str(tmp_path / "batch.npy"),
        "raw_outputs": ["box_dist", "cls_logits"],
    }
    reference = Detector(model)
    config = {"model_name": "tiny", "token": TOKEN, "reduced_decode": False}  # full decode
    with running(Detector(model), **config) as (server, _client):
        args["target"] = server.target
        out = run_checks(triton_python, "unary", args)
        assert metric(server, "understudy_frames_answered_total", {"rpc": "kserve"}) == 5
    assert out["live"] and out["ready"] and out["model_ready"] and out["raw_ready"]
    assert out["server"]["name"] == "understudy" and "statistics" in out["server"]["extensions"]
    assert out["metadata"]["inputs"] == [
        {"name": "IMAGE", "datatype": "BYTES", "shape": ["1"]},
        {"name": "FRAME", "datatype": "UINT8", "shape": ["-1", "-1", "3"]},
    ]
    assert out["metadata"]["outputs"] == [
        {"name": "DETECTIONS", "datatype": "FP32", "shape": ["-1", "6"]}
    ]
    assert out["raw_metadata"]["inputs"][0]["shape"] == ["-1", "3", "64", "64"]
    names = out["config"]["config"]["parameters"]["class_names"]["string_value"]
    assert json.loads(names) == ["person", "car", "dog"]
    assert int(out["raw_config"]["config"]["max_batch_size"]) >= 2
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_allclose(out["jpeg"], _detections(reference, decoded), atol=1e-3)
    assert out["jpeg_id"] == "jpeg-1"
    np.testing.assert_allclose(out["frame"], _detections(reference, image), atol=1e-3)
    want = reference.backend.infer(batch)
    for name, value in out["raw"].items():
        np.testing.assert_allclose(value, want[name], rtol=1e-5, atol=1e-5)
    assert out["async"][:2] == ["None", "async-1"]
    np.testing.assert_allclose(out["async"][2], out["frame"], atol=1e-6)
    stats = {s["name"]: s for s in out["statistics"]["model_stats"]}
    assert stats["tiny"]["inference_stats"]["success"]["count"] == "3"
    assert int(stats["tiny"]["inference_stats"]["queue"]["count"]) == 3
    assert stats["tiny_raw"]["inference_count"] == "2"
    bad = out["bad"]
    assert bad["wrong_datatype"][0] == "StatusCode.INVALID_ARGUMENT"
    assert "must be UINT8" in bad["wrong_datatype"][1]
    assert bad["wrong_shape"][0] == "StatusCode.INVALID_ARGUMENT"
    assert bad["undecodable"][0] == "StatusCode.INVALID_ARGUMENT"
    assert bad["unknown_model"][0] == "StatusCode.NOT_FOUND"
    assert bad["unknown_model_metadata"][0] == "StatusCode.NOT_FOUND"
    assert bad["unknown_input"][0] == "StatusCode.INVALID_ARGUMENT"
    assert bad["unimplemented"][0] == "StatusCode.UNIMPLEMENTED"
    assert bad["no_token"][0] == "StatusCode.UNAUTHENTICATED"
    assert bad["after_errors"] == 6  # the server kept serving
    reference.close()


def test_tritonclient_stream_answers_dropped_frames(triton_python: Path) -> None:
    det = FakeDetector()
    n = 5
    with running(det, model_name="fake") as (server, _client):
        gate = hold(det)
        args = {"target": server.target, "model": "fake", "frames": n}
        proc = subprocess.Popen(
            [str(triton_python), str(CHECKS), "stream", json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "SENT0"
            assert det.started.wait(30)  # frame 0 is in the model: 1..3 will be superseded
            proc.stdin.write("go\n")
            proc.stdin.flush()
            received = {"rpc": "kserve_stream"}
            wait_until(
                lambda: metric(server, "understudy_frames_received_total", received) == n, 30
            )
            gate.set()
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            gate.set()
            proc.kill()
        assert proc.returncode == 0, stderr[-3000:]
    got = json.loads(stdout.strip().splitlines()[-1])["responses"]
    assert [r.get("id") for r in got] == [str(i) for i in range(n)]
    dropped = [r["parameters"].get("understudy_dropped", {}).get("bool_param", False) for r in got]
    assert dropped == [False, True, True, True, False]
    for r, was_dropped in zip(got, dropped):
        assert r["shape"] == ([0, 6] if was_dropped else [1, 6])
        assert r["parameters"]["triton_final_response"] == {"bool_param": True}
        if was_dropped:
            assert r["parameters"]["understudy_drop_reason"] == {"string_param": "superseded"}
