"""The KServe tensor codec: BYTES length prefixes, raw vs typed contents, outputs."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from runtime.kserve.tensors import (
    TensorError,
    add_output,
    decode_bytes_elements,
    encode_bytes_elements,
    read_inputs,
)
from runtime.proto.inference import grpc_service_pb2 as kpb


def _request(*tensors: tuple[str, str, list[int]], raw: list[bytes] | None = None):
    request = kpb.ModelInferRequest(model_name="m")
    for name, datatype, shape in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    if raw is not None:
        request.raw_input_contents.extend(raw)
    return request


def test_bytes_elements_roundtrip() -> None:
    elements = [b"", b"a", b"\x00\xff" * 300]
    raw = encode_bytes_elements(elements)
    assert raw[:4] == b"\x00\x00\x00\x00" and raw[4:8] == struct.pack("<I", 1)
    assert decode_bytes_elements(raw, 3, "x") == elements


def test_bytes_length_prefix_overrun_is_refused() -> None:
    raw = struct.pack("<I", 100) + b"only ten b"
    with pytest.raises(TensorError, match="overruns the buffer"):
        decode_bytes_elements(raw, 1, "input 'IMAGE'")
    with pytest.raises(TensorError, match="length prefix is missing"):
        decode_bytes_elements(b"\x01\x00", 1, "input 'IMAGE'")
    with pytest.raises(TensorError, match="left over"):
        decode_bytes_elements(encode_bytes_elements([b"ab"]) + b"junk", 1, "x")
    huge = struct.pack("<I", 0xFFFFFFFF) + b"x"
    with pytest.raises(TensorError, match="overruns"):
        read_inputs(_request(("IMAGE", "BYTES", [1]), raw=[huge]))


def test_raw_and_typed_contents_give_the_same_arrays() -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    raw = read_inputs(_request(("x", "FP32", [3, 4]), raw=[values.tobytes()]))[0]
    typed_request = _request(("x", "FP32", [3, 4]))
    typed_request.inputs[0].contents.fp32_contents.extend(values.ravel().tolist())
    typed = read_inputs(typed_request)[0]
    np.testing.assert_array_equal(raw.value, values)
    np.testing.assert_array_equal(typed.value, values)
    assert raw.value.dtype == typed.value.dtype == np.float32

    pixels = np.array([[0, 7, 255]], np.uint8)
    typed_request = _request(("f", "UINT8", [1, 3]))
    typed_request.inputs[0].contents.uint_contents.extend([0, 7, 255])
    got = read_inputs(typed_request)[0].value
    assert got.dtype == np.uint8 and got.tolist() == pixels.tolist()

    typed_request = _request(("s", "BYTES", [2]))
    typed_request.inputs[0].contents.bytes_contents.extend([b"jpeg", b""])
    assert read_inputs(typed_request)[0].value == [b"jpeg", b""]


def test_typed_contents_out_of_range_or_wrong_count() -> None:
    request = _request(("f", "UINT8", [2]))
    request.inputs[0].contents.uint_contents.extend([1, 256])
    with pytest.raises(TensorError, match="outside UINT8's range"):
        read_inputs(request)
    request = _request(("x", "FP32", [3]))
    request.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
    with pytest.raises(TensorError, match="has 2 elements but shape \\[3\\] needs 3"):
        read_inputs(request)
    request = _request(("h", "FP16", [1]))
    with pytest.raises(TensorError, match="no typed contents"):
        read_inputs(request)


def test_raw_contents_checked_against_shape_and_inputs() -> None:
    with pytest.raises(TensorError, match="12 bytes but 4 FP32 elements take 16"):
        read_inputs(_request(("x", "FP32", [2, 2]), raw=[b"\x00" * 12]))
    with pytest.raises(TensorError, match="2 entries for 1 inputs"):
        read_inputs(_request(("x", "UINT8", [1]), raw=[b"\x00", b"\x00"]))
    with pytest.raises(TensorError, match="negative dimension"):
        read_inputs(_request(("x", "UINT8", [-1, 3]), raw=[b"\x00" * 3]))
    with pytest.raises(TensorError, match="datatype 'FLOAT'"):
        read_inputs(_request(("x", "FLOAT", [1]), raw=[b"\x00" * 4]))
    mixed = _request(("x", "FP32", [1]), raw=[b"\x00" * 4])
    mixed.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(TensorError, match="send every input one way"):
        read_inputs(mixed)


def test_outputs_go_to_raw_output_contents() -> None:
    response = kpb.ModelInferResponse()
    dets = np.array([[1, 2, 3, 4, 0.5, 2]], np.float32)
    add_output(response, "DETECTIONS", dets)
    add_output(response, "NAMES", [b"person", b"car"])
    assert [o.name for o in response.outputs] == ["DETECTIONS", "NAMES"]
    assert response.outputs[0].datatype == "FP32" and list(response.outputs[0].shape) == [1, 6]
    assert not response.outputs[0].HasField("contents")
    got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(1, 6)
    np.testing.assert_array_equal(got, dets)
    assert response.outputs[1].datatype == "BYTES" and list(response.outputs[1].shape) == [2]
    assert decode_bytes_elements(response.raw_output_contents[1], 2, "x") == [b"person", b"car"]
