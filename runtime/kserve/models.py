"""The two models a Triton client sees: ``<name>`` (detections) and ``<name>_raw`` (the network).

``<name>`` (version "1", ``max_batch_size`` 0) takes ONE of two inputs:
- ``IMAGE`` BYTES [1]: an encoded JPEG or PNG (the same header checks, pixel limit and
  reduced JPEG decoding as ``understudy.v1``);
- ``FRAME`` UINT8 [-1, -1, 3]: raw BGR pixels, (H, W, 3).

and answers ``DETECTIONS`` FP32 [-1, 6]: one row per detection, (x1, y1, x2, y2, score,
class), boxes in the pixels of the image as sent. Class names are in ModelConfig's
``parameters["class_names"]`` (a JSON list).

``<name>_raw`` (``max_batch_size`` = the backend's largest batch: ``--max-batch``) is the
network itself: input ``images`` FP32 (or FP16) [3, H, W] per batch element, letterboxed
and normalized as the model's spec says (``parameters``: input_size, pixel_format, mean,
std, layout), outputs the network's tensors (``box_dist``/``cls_logits`` or
``boxes``/``scores``) as FP32.

Each view turns a request into a scheduler input (:meth:`prepare`) and an outcome into a
response (:meth:`fill`); malformed requests raise :class:`TensorError`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.errors import InputError
from runtime.frames import check_pixels, decode_encoded_scaled
from runtime.kserve.raw import RawInput, RawOutputs
from runtime.kserve.tensors import NUMPY_TO_DATATYPE, TensorError, add_output, read_inputs
from runtime.model_spec import INPUT_NAME, ModelSpec
from runtime.proto.inference import grpc_service_pb2 as kpb
from runtime.proto.inference import model_config_pb2 as mc
from runtime.scheduler import Answered

VERSION = "1"
DETECTIONS = "DETECTIONS"
_EMPTY_DETECTIONS = np.zeros((0, 6), np.float32)


@dataclass(frozen=True)
class Limits:
    """What the server accepts: ``max_pixels`` per image; ``fit_size`` (H, W) lets large
    JPEGs decode at 1/2..1/8 scale (None: always in full)."""

    max_pixels: int
    fit_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class Prepared:
    """A request ready for the scheduler: ``image`` ((H, W, 3) uint8 BGR, or a RawInput),
    the size of the image as sent, its decode reduction ``scale``, ``decode_ms`` and the
    ``outputs`` to answer with."""

    image: Any
    width: int
    height: int
    scale: int
    decode_ms: float
    outputs: tuple[str, ...]


def _tensor_meta(name: str, datatype: str, shape: list[int]) -> Any:
    return kpb.ModelMetadataResponse.TensorMetadata(name=name, datatype=datatype, shape=shape)


def _config_type(datatype: str) -> int:
    return mc.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")


def _requested(request: kpb.ModelInferRequest, outputs: tuple[str, ...], model: str) -> list[str]:
    """The outputs a request asks for (all when it names none), in the model's order."""
    asked = [o.name for o in request.outputs]
    unknown = [n for n in asked if n not in outputs]
    if unknown:
        raise TensorError(
            f"model {model!r} has no output {unknown[0]!r}; its outputs: {', '.join(outputs)}"
        )
    return [n for n in outputs if n in asked] if asked else list(outputs)


class DetectionModel:
    """``<name>``: encoded image or raw BGR frame in, detections out."""

    inputs = (("IMAGE", "BYTES", [1]), ("FRAME", "UINT8", [-1, -1, 3]))
    outputs = (DETECTIONS,)

    def __init__(self, name: str, spec: ModelSpec, backend_name: str) -> None:
        self.name = name
        self.spec = spec
        self.backend_name = backend_name

    def metadata(self) -> kpb.ModelMetadataResponse:
        return kpb.ModelMetadataResponse(
            name=self.name,
            versions=[VERSION],
            platform="understudy_detector",
            inputs=[_tensor_meta(n, t, s) for n, t, s in self.inputs],
            outputs=[_tensor_meta(DETECTIONS, "FP32", [-1, 6])],
        )

    def config(self) -> mc.ModelConfig:
        h, w = self.spec.input_size
        return mc.ModelConfig(
            name=self.name,
            platform="understudy_detector",
            backend=self.backend_name,
            max_batch_size=0,
            input=[
                mc.ModelInput(name=n, data_type=_config_type(t), dims=s, optional=True)
                for n, t, s in self.inputs
            ],
            output=[mc.ModelOutput(name=DETECTIONS, data_type=mc.TYPE_FP32, dims=[-1, 6])],
            instance_group=[mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_MODEL)],
            parameters={
                "class_names": mc.ModelParameter(string_value=json.dumps(self.spec.class_names)),
                "input_size": mc.ModelParameter(string_value=f"{h}x{w}"),
                "detections_layout": mc.ModelParameter(
                    string_value="x1,y1,x2,y2,score,class (pixels of the image as sent)"
                ),
            },
            model_transaction_policy=mc.ModelTransactionPolicy(decoupled=False),
        )

    def prepare(self, request: kpb.ModelInferRequest, limits: Limits) -> Prepared:
        """The image of a request (exactly one of IMAGE, FRAME) -> :class:`Prepared`."""
        outputs = _requested(request, self.outputs, self.name)
        known = {n: (t, s) for n, t, s in self.inputs}
        for tensor in request.inputs:
            if tensor.name not in known:
                raise TensorError(
                    f"model {self.name!r} has no input {tensor.name!r}; send IMAGE (an "
                    "encoded JPEG/PNG, BYTES [1]) or FRAME (raw BGR, UINT8 [H, W, 3])"
                )
            if tensor.datatype != known[tensor.name][0]:
                raise TensorError(
                    f"input {tensor.name!r} must be {known[tensor.name][0]}, got {tensor.datatype}"
                )
        if len(request.inputs) != 1:
            names = ", ".join(t.name for t in request.inputs) or "none"
            raise TensorError(
                f"model {self.name!r} takes exactly one input, IMAGE or FRAME; got "
                f"{len(request.inputs)} ({names})"
            )
        if request.inputs[0].name == "IMAGE" and list(request.inputs[0].shape) != [1]:
            raise TensorError(
                f"input 'IMAGE' must have shape [1], got {list(request.inputs[0].shape)}"
            )
        inputs = read_inputs(request)
        tensor = inputs[0]
        start = time.perf_counter()
        if tensor.name == "IMAGE":
            try:
                image, header, r = decode_encoded_scaled(
                    tensor.value[0], max_pixels=limits.max_pixels, fit_size=limits.fit_size
                )
            except InputError as e:
                raise TensorError(f"input 'IMAGE': {e}") from None
            width, height, scale = header.width, header.height, r
        else:
            shape = tensor.shape
            if len(shape) != 3 or shape[2] != 3 or shape[0] < 1 or shape[1] < 1:
                raise TensorError(f"input 'FRAME' must have shape [H, W, 3], got {list(shape)}")
            height, width, scale = shape[0], shape[1], 1
            try:
                check_pixels(width, height, limits.max_pixels, "input 'FRAME'")
            except InputError as e:
                raise TensorError(str(e)) from None
            image = tensor.value
        decode_ms = (time.perf_counter() - start) * 1000.0
        return Prepared(image, width, height, scale, decode_ms, tuple(outputs))

    def fill(self, response: kpb.ModelInferResponse, prepared: Prepared, outcome: Any) -> None:
        """Add DETECTIONS for an Answered (or, empty, a Dropped) outcome."""
        width, height, scale = prepared.width, prepared.height, prepared.scale
        if not isinstance(outcome, Answered):
            add_output(response, DETECTIONS, _EMPTY_DETECTIONS)
            return
        d = outcome.detections
        boxes = d.boxes
        if scale != 1:  # decoded reduced: back to the pixels of the image as sent
            boxes = np.minimum(boxes * scale, [width, height] * 2)
        rows = np.empty((len(d), 6), np.float32)
        rows[:, :4] = boxes
        rows[:, 4] = d.scores
        rows[:, 5] = d.class_ids
        add_output(response, DETECTIONS, rows)


class RawModel:
    """``<name>_raw``: the network's input tensor in, its output tensors out."""

    def __init__(self, name: str, spec: ModelSpec, backend: Any) -> None:
        self.name = name
        self.spec = spec
        self.backend_name = str(getattr(backend, "name", "unknown"))
        self.input_dtype = np.dtype(backend.input_dtype)
        self.input_datatype = NUMPY_TO_DATATYPE[self.input_dtype.newbyteorder("<")]
        self.max_batch = max(1, int(backend.max_batch))
        a, c, r = spec.num_anchors, spec.num_classes, spec.reg_max
        first, second = spec.output_names
        box_width = 4 * r if spec.output_layout == "raw_dfl" else 4
        self.output_dims = {first: [a, box_width], second: [a, c]}
        self.outputs = (first, second)

    def metadata(self) -> kpb.ModelMetadataResponse:
        h, w = self.spec.input_size
        return kpb.ModelMetadataResponse(
            name=self.name,
            versions=[VERSION],
            platform=self._platform(),
            inputs=[_tensor_meta(INPUT_NAME, self.input_datatype, [-1, 3, h, w])],
            outputs=[_tensor_meta(n, "FP32", [-1, *d]) for n, d in self.output_dims.items()],
        )

    def _platform(self) -> str:
        return {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}.get(
            self.backend_name, self.backend_name
        )

    def config(self) -> mc.ModelConfig:
        h, w = self.spec.input_size
        s = self.spec
        params = {
            "input_size": f"{h}x{w}",
            "pixel_format": s.pixel_format,
            "mean": json.dumps(list(s.mean)),
            "std": json.dumps(list(s.std)),
            "output_layout": s.output_layout,
            "strides": json.dumps(list(s.strides)),
            "reg_max": str(s.reg_max),
            "class_names": json.dumps(list(s.class_names)),
            "letterbox": "resize keeping the aspect ratio, pad to input_size (centre)",
        }
        return mc.ModelConfig(
            name=self.name,
            platform=self._platform(),
            backend=self.backend_name,
            max_batch_size=self.max_batch,
            input=[
                mc.ModelInput(
                    name=INPUT_NAME,
                    data_type=_config_type(self.input_datatype),
                    format=mc.ModelInput.FORMAT_NCHW,
                    dims=[3, h, w],
                )
            ],
            output=[
                mc.ModelOutput(name=n, data_type=mc.TYPE_FP32, dims=d)
                for n, d in self.output_dims.items()
            ],
            instance_group=[mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_MODEL)],
            parameters={k: mc.ModelParameter(string_value=v) for k, v in params.items()},
            model_transaction_policy=mc.ModelTransactionPolicy(decoupled=False),
        )

    def prepare(self, request: kpb.ModelInferRequest, limits: Limits) -> Prepared:
        """The input batch of a request -> :class:`Prepared` (image = a RawInput)."""
        outputs = _requested(request, self.outputs, self.name)
        h, w = self.spec.input_size
        names = [t.name for t in request.inputs]
        if names != [INPUT_NAME]:
            unknown = [n for n in names if n != INPUT_NAME]
            what = f"has no input {unknown[0]!r}" if unknown else "takes exactly one input"
            raise TensorError(
                f"model {self.name!r} {what}: send {INPUT_NAME!r} {self.input_datatype} "
                f"[B, 3, {h}, {w}]"
            )
        datatype, shape = request.inputs[0].datatype, tuple(request.inputs[0].shape)
        if datatype != self.input_datatype:
            raise TensorError(f"input {INPUT_NAME!r} must be {self.input_datatype}, got {datatype}")
        if len(shape) != 4 or shape[1:] != (3, h, w) or not 1 <= shape[0] <= self.max_batch:
            raise TensorError(
                f"input {INPUT_NAME!r} must have shape [B, 3, {h}, {w}] with 1 <= B <= "
                f"{self.max_batch}, got {list(shape)}"
            )
        tensor = read_inputs(request)[0]
        batch = np.ascontiguousarray(tensor.value, self.input_dtype)
        return Prepared(RawInput(batch), w, h, 1, 0.0, tuple(outputs))

    def fill(self, response: kpb.ModelInferResponse, prepared: Prepared, outcome: Any) -> None:
        """Add the requested outputs (a Dropped outcome: each with batch size 0)."""
        for name in prepared.outputs:
            if isinstance(outcome, Answered) and isinstance(outcome.detections, RawOutputs):
                value = np.asarray(outcome.detections.outputs[name], np.float32)
            else:
                value = np.zeros((0, *self.output_dims[name]), np.float32)
            add_output(response, name, value)
