"""A tiny ONNX model and a fake TensorRT (builder, deserializer, machine) for the engine
tests: the cache logic runs everywhere, without TensorRT or a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.engine.build import BuildResult
from runtime.engine.cache import build_or_load_engine
from runtime.model_spec import ModelSpec

SPEC = ModelSpec(class_names=("a", "b"), input_size=(32, 32))


def tiny_onnx(path: Path, batch: int | str = "batch", qdq: bool = False) -> Path:
    """images (B, 3, 32, 32) -> Conv -> y, with Understudy metadata (optionally Q/DQ)."""
    w = numpy_helper.from_array(np.full((2, 3, 1, 1), 0.1, np.float32), "w")
    inits, first = [w], "images"
    nodes = []
    if qdq:
        inits.append(numpy_helper.from_array(np.array(0.02, np.float32), "s"))
        inits.append(numpy_helper.from_array(np.array(0, np.int8), "z"))
        nodes.append(helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"], name="/q"))
        nodes.append(helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="/dq"))
        first = "dq"
    nodes.append(helper.make_node("Conv", [first, "w"], ["y"], name="/conv/Conv"))
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2, 32, 32])
    graph = helper.make_graph(nodes, "tiny", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = ModelSpec(**{**SPEC.__dict__, "precision": "int8" if qdq else "fp32"})
    for k, v in spec.to_metadata_props().items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


class Fakes:
    """A builder that writes a fake engine, a deserializer and a machine, all adjustable."""

    def __init__(self) -> None:
        self.env = ["10.3.0", "Orin (nvgpu)", "8.7"]
        self.builds: list[tuple[Path, str, tuple | None]] = []
        self.loads = True
        self.messages: list[str] = []

    def builder(self, onnx_path: Path, engine_path: Path, precision: str, **kw) -> BuildResult:
        self.builds.append((engine_path, precision, kw["profile"]))
        engine_path.parent.mkdir(parents=True, exist_ok=True)
        engine_path.write_bytes(f"engine {precision} #{len(self.builds)}".encode() * 8)
        return BuildResult(engine_path, precision, kw["profile"], 1.5, self.env[0])

    def call(self, onnx_path: Path, precision: str | None, cache: Path, **kw) -> Path:
        return build_or_load_engine(
            onnx_path, precision, cache, builder=self.builder, validate=lambda p: self.loads,
            environment=lambda: tuple(self.env), out=self.messages.append, **kw,
        )  # fmt: skip
