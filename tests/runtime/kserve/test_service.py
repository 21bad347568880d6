"""The KServe v2 service in-process, through the generated stubs: readiness, inference on
the shared scheduler, drops answered, statistics, errors, auth, reflection, UNIMPLEMENTED.
(tests/runtime/kserve/test_tritonclient.py drives the same server with tritonclient.)"""

from __future__ import annotations

import queue
import threading

import grpc
import numpy as np
import pytest

from runtime.frames import encode_image
from runtime.kserve.tensors import encode_bytes_elements
from runtime.pipeline import Detector
from runtime.proto import pb
from runtime.proto.inference import grpc_service_pb2 as kpb
from runtime.proto.inference import grpc_service_pb2_grpc as kpb_grpc
from tests.runtime.serving_fakes import FakeDetector, hold, metric, running, solid, wait_until
from tests.runtime.tiny_models import build_conv_model, make_spec

pytestmark = pytest.mark.timeout(60)
NAME = "fake"  # FakeDetector's preset


def _stub(server) -> kpb_grpc.GRPCInferenceServiceStub:
    return kpb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))


def frame_request(image: np.ndarray, rid: str = "", model: str = NAME) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name=model, id=rid)
    request.inputs.add(name="FRAME", datatype="UINT8", shape=list(image.shape))
    request.raw_input_contents.append(image.tobytes())
    return request


def image_request(data: bytes, rid: str = "", model: str = NAME) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name=model, id=rid)
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(encode_bytes_elements([data]))
    return request


def detections(response: kpb.ModelInferResponse) -> np.ndarray:
    assert [o.name for o in response.outputs] == ["DETECTIONS"]
    shape = list(response.outputs[0].shape)
    return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(shape)


def test_ready_only_once_warm() -> None:
    gate = threading.Event()
    det = FakeDetector(warmup_gate=gate)
    from runtime.server import build_server
    from runtime.server_config import ServerConfig

    server = build_server(det, ServerConfig(port=0))
    try:
        stub = _stub(server)
        assert stub.ServerLive(kpb.ServerLiveRequest()).live
        assert not stub.ServerReady(kpb.ServerReadyRequest()).ready
        assert not stub.ModelReady(kpb.ModelReadyRequest(name=NAME)).ready
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(frame_request(solid(1, 8, 8)))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        gate.set()
        assert server.wait_ready(10)
        assert stub.ServerReady(kpb.ServerReadyRequest()).ready
        assert stub.ModelReady(kpb.ModelReadyRequest(name=NAME, version="1")).ready
        assert not stub.ModelReady(kpb.ModelReadyRequest(name="other")).ready
    finally:
        server.stop(0.5)


def test_unary_frame_answer_statistics_and_metrics() -> None:
    with running(FakeDetector()) as (server, _client):
        stub = _stub(server)
        response = stub.ModelInfer(frame_request(solid(4, 20, 30), rid="req-7"))
        assert response.id == "req-7" and response.model_name == NAME
        assert response.model_version == "1"
        # FakeDetector: one box over the top-left quarter, score 0.5, class value % 3
        np.testing.assert_allclose(detections(response), [[0, 0, 15, 10, 0.5, 1]])
        assert "understudy_dropped" not in response.parameters
        typed = kpb.ModelInferRequest(model_name=NAME)  # typed contents, not raw bytes
        typed.inputs.add(name="FRAME", datatype="UINT8", shape=[20, 30, 3])
        typed.inputs[0].contents.uint_contents.extend(solid(5, 20, 30).ravel().tolist())
        np.testing.assert_allclose(detections(stub.ModelInfer(typed)), [[0, 0, 15, 10, 0.5, 2]])
        stats = stub.ModelStatistics(kpb.ModelStatisticsRequest(name=NAME)).model_stats
        assert [s.name for s in stats] == [NAME] and stats[0].version == "1"
        s = stats[0].inference_stats
        series = "understudy_stage_duration_seconds"
        assert s.success.count == 2 == metric(server, f"{series}_count", {"stage": "total"})
        assert s.queue.count == 2 and s.compute_infer.count == 2
        assert s.success.ns == round(metric(server, f"{series}_sum", {"stage": "total"}) * 1e9)
        assert stats[0].inference_count == 2 and stats[0].execution_count == 2
        assert stats[0].last_inference > 0
        assert metric(server, "understudy_frames_answered_total", {"rpc": "kserve"}) == 2


def _stream(stub, requests: queue.Queue):
    def gen():
        while (item := requests.get()) is not None:
            yield item

    return stub.ModelStreamInfer(gen())


def test_stream_keeps_latest_and_answers_dropped_frames() -> None:
    det = FakeDetector()
    with running(det) as (server, _client):
        stub = _stub(server)
        requests: queue.Queue = queue.Queue()
        responses = _stream(stub, requests)
        gate = hold(det)
        requests.put(frame_request(solid(0, 8, 8), rid="0"))
        det.started.wait(5)  # frame 0 is in the model; 1 and 2 will be superseded by 3
        for i in (1, 2, 3):
            requests.put(frame_request(solid(i, 8, 8), rid=str(i)))
        received = "understudy_frames_received_total"
        wait_until(lambda: metric(server, received, {"rpc": "kserve_stream"}) == 4)
        gate.set()
        requests.put(None)
        got = [r for r in responses]
    assert [r.error_message for r in got] == [""] * 4
    answers = [r.infer_response for r in got]
    assert [a.id for a in answers] == ["0", "1", "2", "3"]
    for a in answers:
        dropped = (
            a.parameters["understudy_dropped"].bool_param
            if "understudy_dropped" in a.parameters
            else False
        )
        assert dropped == (a.id in ("1", "2"))
        if dropped:
            assert a.parameters["understudy_drop_reason"].string_param == "superseded"
            assert detections(a).shape == (0, 6)
        else:
            assert detections(a).shape == (1, 6)


def test_timeout_parameter_is_the_budget() -> None:
    with running(FakeDetector(), budget_ms=10_000.0) as (server, _client):
        stub = _stub(server)
        request = frame_request(solid(1, 8, 8), rid="late")
        request.parameters["timeout"].int64_param = 1  # 1 microsecond: over before it starts
        response = stub.ModelInfer(request)
        assert response.parameters["understudy_dropped"].bool_param
        assert response.parameters["understudy_drop_reason"].string_param == "budget_exceeded"
        assert detections(response).shape == (0, 6)
        request.parameters["timeout"].uint64_param = 5_000_000
        request.parameters["priority"].uint64_param = 1
        request.parameters["sequence_id"].int64_param = 3
        request.parameters["triton_enable_empty_final_response"].bool_param = True
        response = stub.ModelInfer(request)
        assert "understudy_dropped" not in response.parameters
        assert response.parameters["triton_final_response"].bool_param
        request.parameters["timeout"].string_param = "soon"
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(request)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _bad_requests() -> dict[str, tuple[kpb.ModelInferRequest, grpc.StatusCode, str]]:
    jpeg = encode_image(solid(5, 20, 30), "jpeg")
    wrong_type = frame_request(solid(1, 8, 8))
    wrong_type.inputs[0].datatype = "FP32"
    wrong_shape = frame_request(solid(1, 8, 8))
    wrong_shape.inputs[0].ClearField("shape")
    wrong_shape.inputs[0].shape.extend([64, 3])
    unknown_input = frame_request(solid(1, 8, 8))
    unknown_input.inputs[0].name = "PIXELS"
    unknown_output = frame_request(solid(1, 8, 8))
    unknown_output.outputs.add(name="BOXES")
    overrun = image_request(jpeg)
    overrun.raw_input_contents[0] = b"\xff\xff\x00\x00" + jpeg[:100]
    both = image_request(jpeg)
    both.inputs.add(name="FRAME", datatype="UINT8", shape=[1, 1, 3])
    both.raw_input_contents.append(b"\x00\x00\x00")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    return {
        "wrong datatype": (wrong_type, invalid, "must be UINT8"),
        "wrong shape": (wrong_shape, invalid, "[H, W, 3]"),
        "undecodable": (image_request(jpeg[: len(jpeg) // 2]), invalid, "truncated"),
        "not an image": (image_request(b"hello"), invalid, "neither JPEG nor PNG"),
        "unknown input": (unknown_input, invalid, "no input 'PIXELS'"),
        "unknown output": (unknown_output, invalid, "no output 'BOXES'"),
        "length overrun": (overrun, invalid, "overruns"),
        "two inputs": (both, invalid, "exactly one input"),
        "unknown model": (
            frame_request(solid(1, 8, 8), model="yolo"),
            grpc.StatusCode.NOT_FOUND,
            "unknown model 'yolo'",
        ),
        "unknown version": (
            kpb.ModelInferRequest(model_name=NAME, model_version="2"),
            grpc.StatusCode.NOT_FOUND,
            "no version '2'",
        ),
    }


def test_bad_requests_are_refused_and_the_server_keeps_serving() -> None:
    with running(FakeDetector()) as (server, client):
        stub = _stub(server)
        for name, (request, code, text) in _bad_requests().items():
            with pytest.raises(grpc.RpcError) as e:
                stub.ModelInfer(request)
            assert e.value.code() == code, name
            assert text in e.value.details() and "\n" not in e.value.details(), name
        assert detections(stub.ModelInfer(frame_request(solid(1, 8, 8)))).shape == (1, 6)
        assert client.detect(solid(1, 8, 8)).detections  # understudy.v1 still answers
        stats = stub.ModelStatistics(kpb.ModelStatisticsRequest(name=NAME)).model_stats[0]
        assert stats.inference_stats.fail.count == len(_bad_requests())
        # in a stream: an error_message for that request, the others answered
        requests = [frame_request(solid(1, 8, 8), rid="a"), image_request(b"nope", rid="b")]
        requests.append(frame_request(solid(2, 8, 8), rid="c"))
        got = list(stub.ModelStreamInfer(iter(requests)))
        assert [r.infer_response.id for r in got] == ["a", "b", "c"]
        assert [bool(r.error_message) for r in got] == [False, True, False]
        assert "neither JPEG nor PNG" in got[1].error_message


def test_other_rpcs_unimplemented_with_one_line() -> None:
    with running(FakeDetector()) as (server, _client):
        channel = grpc.insecure_channel(server.target)
        for method in (
            "RepositoryIndex",
            "SystemSharedMemoryStatus",
            "TraceSetting",
            "LogSettings",
        ):
            call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
            with pytest.raises(grpc.RpcError) as e:
                call(b"")
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert method in e.value.details() and "\n" not in e.value.details()


def test_token_applies_to_kserve() -> None:
    with running(FakeDetector(), token="tok") as (server, _client):
        stub = _stub(server)
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(frame_request(solid(1, 8, 8)))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:
            list(stub.ModelStreamInfer(iter([frame_request(solid(1, 8, 8))])))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        auth = (("authorization", "Bearer tok"),)
        response = stub.ModelInfer(frame_request(solid(1, 8, 8)), metadata=auth)
        assert detections(response).shape == (1, 6)


def test_reflection_lists_the_inference_service() -> None:
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with running(FakeDetector()) as (_server, client):
        db = ProtoReflectionDescriptorDatabase(client.channel)
        assert "inference.GRPCInferenceService" in set(db.get_services())
        service = DescriptorPool(db).FindServiceByName("inference.GRPCInferenceService")
        assert "ModelStreamInfer" in {m.name for m in service.methods}


def test_model_name_flag_and_raw_model_on_a_real_network(tmp_path) -> None:
    path = build_conv_model(tmp_path / "tiny.onnx", make_spec())
    reference = Detector(path)
    with running(Detector(path), model_name="tiny") as (server, client):
        stub = _stub(server)
        rng = np.random.default_rng(0)
        image = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
        png = encode_image(image, "png")  # lossless: the same pixels as `image`
        got = detections(stub.ModelInfer(image_request(png, model="tiny")))
        dets, _ = reference.detect(image)
        want = np.concatenate([dets.boxes, dets.scores[:, None], dets.class_ids[:, None]], 1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
        v1 = client.detect(png).detections  # understudy.v1 Detect: the same frame, same answer
        assert len(v1) == len(got)
        np.testing.assert_allclose(
            [[d.x1, d.y1, d.score] for d in v1], got[:, [0, 1, 4]], atol=1e-4
        )

        batch = rng.random((2, 3, 64, 64), dtype=np.float32)
        request = kpb.ModelInferRequest(model_name="tiny_raw", id="r")
        request.inputs.add(name="images", datatype="FP32", shape=[2, 3, 64, 64])
        request.raw_input_contents.append(batch.tobytes())
        response = stub.ModelInfer(request)
        want = reference.backend.infer(batch)
        assert [o.name for o in response.outputs] == ["box_dist", "cls_logits"]
        for out, raw in zip(response.outputs, response.raw_output_contents):
            value = np.frombuffer(raw, np.float32).reshape(list(out.shape))
            np.testing.assert_allclose(value, want[out.name], rtol=1e-5, atol=1e-5)
        stats = {s.name: s for s in stub.ModelStatistics(kpb.ModelStatisticsRequest()).model_stats}
        assert set(stats) == {"tiny", "tiny_raw"}
        assert stats["tiny_raw"].inference_count == 2 and stats["tiny_raw"].execution_count == 1
        assert stats["tiny_raw"].inference_stats.success.count == 1
        assert stats["tiny"].inference_stats.success.count == 2  # KServe + understudy.v1
        config = stub.ModelConfig(kpb.ModelConfigRequest(name="tiny_raw")).config
        assert config.max_batch_size >= 2 and list(config.input[0].dims) == [3, 64, 64]
        bad = kpb.ModelInferRequest(model_name="tiny_raw")
        bad.inputs.add(name="images", datatype="FP32", shape=[1, 3, 32, 32])
        bad.raw_input_contents.append(np.zeros((1, 3, 32, 32), np.float32).tobytes())
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reference.close()
    assert pb  # the understudy.v1 stubs and the inference stubs live side by side


def test_model_name_option_is_checked() -> None:
    import argparse

    from runtime.commands import serve
    from runtime.errors import ConfigError
    from runtime.server_config import ServerConfig

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model", "m.onnx", "--model-name", "det-v2.1"])
    config, _ = serve.server_config(args)
    assert config.model_name == "det-v2.1"
    for bad in ("", "a/b", "späti", "x y"):
        with pytest.raises(ConfigError, match="--model-name"):
            ServerConfig(model_name=bad).validate()


def test_graceful_stop_ends_open_streams() -> None:
    from runtime.server import build_server
    from runtime.server_config import ServerConfig

    server = build_server(FakeDetector(), ServerConfig(port=0, budget_ms=10_000.0))
    assert server.wait_ready(10)
    stub = _stub(server)
    requests: queue.Queue = queue.Queue()
    responses = _stream(stub, requests)
    requests.put(frame_request(solid(1, 8, 8), rid="before"))
    first = next(responses)
    assert first.infer_response.id == "before" and not first.error_message
    stopper = threading.Thread(target=server.stop, args=(2.0,))
    stopper.start()
    assert list(responses) == []  # the server ended the stream cleanly (status OK)
    stopper.join(10)
    assert not stopper.is_alive()
