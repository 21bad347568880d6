"""Client side of the tritonclient tests: run by the side environment's python
(``.side-envs/triton``, tritonclient[grpc]==2.41.0, see scripts/side_env/triton.sh), never
imported by pytest. ``python triton_checks.py SCENARIO '{json args}'`` prints one JSON
object on its last stdout line.

Scenarios:
- ``descriptors``: the fields (number, type, label, message type) of every message and
  the values of every enum in tritonclient's own compiled protos;
- ``unary``: live/ready, metadata, config, infer (JPEG, raw FRAME, ``_raw``), async infer,
  statistics, bad requests, an UNIMPLEMENTED RPC and the token, against one server;
- ``stream``: a ModelStreamInfer stream of FRAME requests; frame 0 is sent, then the
  script prints ``SENT0`` and waits for a line on stdin before sending the others.
"""

from __future__ import annotations

import json
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from proto_shapes import describe  # this script's folder is on sys.path
from tritonclient.utils import InferenceServerException


def descriptors(_args: dict) -> dict:
    from tritonclient.grpc import model_config_pb2, service_pb2

    return describe([service_pb2, model_config_pb2], service_pb2)


def _error(call) -> list:
    try:
        call()
    except InferenceServerException as e:
        return [str(e.status()), e.message()]
    return ["OK", ""]


def _image_input(data: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("IMAGE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=np.object_))
    return tensor


def _frame_input(frame: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("FRAME", list(frame.shape), "UINT8")
    tensor.set_data_from_numpy(frame)
    return tensor


def _infers(client, model: str, args: dict, headers: dict) -> dict:
    out = {}
    with open(args["jpeg"], "rb") as f:
        jpeg = f.read()
    result = client.infer(model, [_image_input(jpeg)], request_id="jpeg-1", headers=headers)
    out["jpeg"] = result.as_numpy("DETECTIONS").tolist()
    out["jpeg_id"] = result.get_response().id
    frame = np.load(args["frame"])
    result = client.infer(model, [_frame_input(frame)], request_id="frame-1", headers=headers)
    out["frame"] = result.as_numpy("DETECTIONS").tolist()
    batch = np.load(args["batch"])
    raw_input = grpcclient.InferInput("images", list(batch.shape), "FP32")
    raw_input.set_data_from_numpy(batch)
    result = client.infer(f"{model}_raw", [raw_input], headers=headers)
    out["raw"] = {name: result.as_numpy(name).tolist() for name in args["raw_outputs"]}
    answers: queue.Queue = queue.Queue()
    client.async_infer(
        model,
        [_frame_input(frame)],
        callback=lambda result, error: answers.put((result, error)),
        request_id="async-1",
        headers=headers,
    )
    result, error = answers.get(timeout=30)
    out["async"] = [str(error), result.get_response().id, result.as_numpy("DETECTIONS").tolist()]
    return out


def _bad(client, model: str, args: dict, headers: dict) -> dict:
    frame = np.load(args["frame"])
    wrong_type = grpcclient.InferInput("FRAME", list(frame.shape), "FP32")
    wrong_type.set_data_from_numpy(frame.astype(np.float32))
    wrong_shape = grpcclient.InferInput("FRAME", [frame.size], "UINT8")
    wrong_shape.set_data_from_numpy(frame.reshape(-1))
    unknown = grpcclient.InferInput("PIXELS", list(frame.shape), "UINT8")
    unknown.set_data_from_numpy(frame)
    return {
        "wrong_datatype": _error(lambda: client.infer(model, [wrong_type], headers=headers)),
        "wrong_shape": _error(lambda: client.infer(model, [wrong_shape], headers=headers)),
        "undecodable": _error(
            lambda: client.infer(model, [_image_input(b"\xff\xd8\xff junk")], headers=headers)
        ),
        "unknown_model": _error(lambda: client.infer("nope", [unknown], headers=headers)),
        "unknown_input": _error(lambda: client.infer(model, [unknown], headers=headers)),
        "unknown_model_metadata": _error(
            lambda: client.get_model_metadata("nope", headers=headers)
        ),
        "unimplemented": _error(lambda: client.get_model_repository_index(headers=headers)),
        "no_token": _error(lambda: client.infer(model, [_frame_input(frame)])),
        "after_errors": client.infer(model, [_frame_input(frame)], headers=headers)
        .as_numpy("DETECTIONS")
        .shape[1],
    }


def unary(args: dict) -> dict:
    model = args["model"]
    headers = {"authorization": f"Bearer {args['token']}"}
    with grpcclient.InferenceServerClient(url=args["target"]) as client:
        out = {
            "live": client.is_server_live(headers=headers),
            "ready": client.is_server_ready(headers=headers),
            "model_ready": client.is_model_ready(model, headers=headers),
            "raw_ready": client.is_model_ready(f"{model}_raw", headers=headers),
            "server": client.get_server_metadata(headers=headers, as_json=True),
            "metadata": client.get_model_metadata(model, headers=headers, as_json=True),
            "raw_metadata": client.get_model_metadata(
                f"{model}_raw", headers=headers, as_json=True
            ),
            "config": client.get_model_config(model, headers=headers, as_json=True),
            "raw_config": client.get_model_config(f"{model}_raw", headers=headers, as_json=True),
        }
        out.update(_infers(client, model, args, headers))
        out["statistics"] = client.get_inference_statistics(headers=headers, as_json=True)
        out["bad"] = _bad(client, model, args, headers)
    return out


def stream(args: dict) -> dict:
    answers: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(url=args["target"]) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        n = args["frames"]
        for i in range(n):
            frame = np.full((8, 8, 3), i, np.uint8)
            client.async_stream_infer(
                args["model"],
                [_frame_input(frame)],
                request_id=str(i),
                enable_empty_final_response=True,
            )
            if i == 0:
                print("SENT0", flush=True)
                sys.stdin.readline()
        got = []
        for _ in range(n):
            result, error = answers.get(timeout=60)
            if error is not None:
                got.append({"error": str(error)})
                continue
            response = result.get_response(as_json=True)
            got.append(
                {
                    "id": response.get("id", ""),
                    "parameters": response.get("parameters", {}),
                    "shape": list(result.as_numpy("DETECTIONS").shape),
                }
            )
        client.stop_stream()
    return {"responses": got}


if __name__ == "__main__":
    scenario, raw_args = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    result = {"descriptors": descriptors, "unary": unary, "stream": stream}[scenario](raw_args)
    print(json.dumps(result), flush=True)
