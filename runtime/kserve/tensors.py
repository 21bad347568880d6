"""Tensors on the KServe v2 wire: request inputs to numpy arrays, arrays to response outputs.

An input tensor's elements arrive either in ``ModelInferRequest.raw_input_contents`` (one
bytes entry per input, in the order of ``inputs``: the elements flattened row-major,
little-endian, no padding) or in the input's typed ``contents`` lists (INT8/16/32 in
``int_contents``, UINT8/16/32 in ``uint_contents``, one list entry per element). A BYTES
tensor is a sequence of elements, each a 4-byte little-endian length followed by that
many bytes, in raw form; one ``bytes_contents`` entry per element in typed form.

Outputs always go to ``raw_output_contents`` (the C++ client reads only that field).
Every malformed tensor raises :class:`TensorError` naming the input and what is wrong.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runtime.errors import InputError
from runtime.proto.inference import grpc_service_pb2 as kpb

# datatype -> (numpy dtype, typed contents field); None: raw contents only
DATATYPES: dict[str, tuple[np.dtype | None, str | None]] = {
    "BOOL": (np.dtype(np.bool_), "bool_contents"),
    "UINT8": (np.dtype("<u1"), "uint_contents"),
    "UINT16": (np.dtype("<u2"), "uint_contents"),
    "UINT32": (np.dtype("<u4"), "uint_contents"),
    "UINT64": (np.dtype("<u8"), "uint64_contents"),
    "INT8": (np.dtype("<i1"), "int_contents"),
    "INT16": (np.dtype("<i2"), "int_contents"),
    "INT32": (np.dtype("<i4"), "int_contents"),
    "INT64": (np.dtype("<i8"), "int64_contents"),
    "FP16": (np.dtype("<f2"), None),
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "FP64": (np.dtype("<f8"), "fp64_contents"),
    "BYTES": (None, "bytes_contents"),
}
NUMPY_TO_DATATYPE = {dtype: name for name, (dtype, _) in DATATYPES.items() if dtype is not None}
_LENGTH = struct.Struct("<I")


class TensorError(InputError):
    """A request's tensor is malformed; ``code`` is the gRPC status name to answer with
    (INVALID_ARGUMENT, or NOT_FOUND for an unknown model)."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class InputTensor:
    """One decoded input: ``value`` is a numpy array of ``shape`` (any datatype but
    BYTES) or, for BYTES, the list of its elements (flattened row-major)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    value: np.ndarray | list[bytes]


def element_count(shape: Sequence[int], what: str) -> int:
    """Number of elements of ``shape`` (1 for a scalar); raises TensorError for a
    negative dimension."""
    if any(d < 0 for d in shape):
        raise TensorError(f"{what}: shape {list(shape)} has a negative dimension")
    return math.prod(shape)


def decode_bytes_elements(data: bytes, count: int, what: str) -> list[bytes]:
    """Split raw BYTES contents into ``count`` elements (4-byte LE length + bytes each).
    Raises TensorError when a length runs past the buffer or bytes are left over."""
    view = memoryview(data)
    out: list[bytes] = []
    pos, end = 0, len(data)
    for i in range(count):
        if pos + 4 > end:
            raise TensorError(
                f"{what}: BYTES element {i} of {count}: its 4-byte length prefix is missing "
                f"(only {end - pos} bytes left); each element is a little-endian uint32 length "
                "then the bytes"
            )
        (n,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if pos + n > end:
            raise TensorError(
                f"{what}: BYTES element {i} says {n} bytes but only {end - pos} remain "
                "(the length prefix overruns the buffer)"
            )
        out.append(bytes(view[pos : pos + n]))
        pos += n
    if pos != end:
        raise TensorError(
            f"{what}: {end - pos} bytes left over after {count} BYTES elements; the shape and "
            "the contents disagree"
        )
    return out


def encode_bytes_elements(elements: Sequence[bytes]) -> bytes:
    """The raw form of BYTES elements: each as a 4-byte LE length then the bytes."""
    return b"".join(_LENGTH.pack(len(e)) + bytes(e) for e in elements)


def _typed_value(
    tensor: kpb.ModelInferRequest.InferInputTensor, dtype: np.dtype | None, count: int, what: str
) -> np.ndarray | list[bytes]:
    field = DATATYPES[tensor.datatype][1]
    if field is None:
        raise TensorError(
            f"{what}: {tensor.datatype} tensors have no typed contents; send them in "
            "raw_input_contents"
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise TensorError(
            f"{what}: contents.{field} has {len(values)} elements but shape "
            f"{list(tensor.shape)} needs {count}"
        )
    if dtype is None:
        return [bytes(v) for v in values]
    array = np.asarray(values, dtype=np.int64 if dtype.kind in "iu" else dtype)
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise TensorError(
                f"{what}: contents.{field} has values outside {tensor.datatype}'s range "
                f"[{info.min}, {info.max}]"
            )
    return array.astype(dtype)


def _raw_value(
    data: bytes, datatype: str, dtype: np.dtype | None, count: int, what: str
) -> np.ndarray | list[bytes]:
    if dtype is None:
        return decode_bytes_elements(data, count, what)
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise TensorError(
            f"{what}: raw contents have {len(data)} bytes but {count} {datatype} elements "
            f"take {expected}"
        )
    return np.frombuffer(data, dtype)


def read_inputs(request: kpb.ModelInferRequest) -> list[InputTensor]:
    """Every input of ``request``, decoded (see the module docstring). Raises TensorError
    for an unknown datatype, a negative dimension, contents that do not match the shape,
    raw and typed contents mixed, or a raw_input_contents count unlike the inputs'."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise TensorError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, in the order of `inputs`"
        )
    out = []
    for i, tensor in enumerate(request.inputs):
        what = f"input {tensor.name!r}"
        if tensor.datatype not in DATATYPES:
            raise TensorError(
                f"{what}: datatype {tensor.datatype!r} is not one of {', '.join(DATATYPES)}"
            )
        dtype = DATATYPES[tensor.datatype][0]
        shape = tuple(int(d) for d in tensor.shape)
        count = element_count(shape, what)
        if raw:
            if tensor.HasField("contents"):
                raise TensorError(
                    f"{what}: has typed contents although raw_input_contents is used; "
                    "send every input one way"
                )
            value = _raw_value(raw[i], tensor.datatype, dtype, count, what)
        else:
            value = _typed_value(tensor, dtype, count, what)
        if isinstance(value, np.ndarray):
            value = value.reshape(shape)
        out.append(InputTensor(tensor.name, tensor.datatype, shape, value))
    return out


def add_output(
    response: kpb.ModelInferResponse, name: str, value: np.ndarray | Sequence[bytes]
) -> None:
    """Append output ``name`` to ``response``: its metadata in ``outputs`` and its elements
    in ``raw_output_contents``. ``value``: a numpy array (datatype from its dtype) or a
    sequence of bytes (a 1-D BYTES tensor)."""
    out = response.outputs.add(name=name)
    if isinstance(value, np.ndarray):
        dtype = value.dtype.newbyteorder("<") if value.dtype.byteorder == ">" else value.dtype
        out.datatype = NUMPY_TO_DATATYPE[np.dtype(dtype)]
        out.shape.extend(value.shape)
        response.raw_output_contents.append(np.ascontiguousarray(value, dtype).tobytes())
    else:
        out.datatype = "BYTES"
        out.shape.append(len(value))
        response.raw_output_contents.append(encode_bytes_elements(value))
