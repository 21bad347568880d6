"""fp16 ONNX for TensorRT 11, whose strongly typed networks take precision from the ONNX
types (TensorRT 10 builds fp16 from the fp32 ONNX with its FP16 builder flag instead).

:func:`to_float16` converts in memory, at engine build time; nothing is written.
"""

from __future__ import annotations

import numpy as np
import onnx

from runtime.errors import ConfigError

FP32_ONLY_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}  # roi / scales stay float32
FP16_MAX = 65504.0


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every float32 weight, constant and Cast target in float16, the graph
    inputs/outputs kept float32 through Cast nodes (so the runtime still feeds float32).

    For TensorRT 11, whose strongly typed networks take precision from the ONNX types.
    Resize/Upsample scales stay float32 (the ONNX spec requires it); weights beyond the
    fp16 range are clipped to +-65504. Q/DQ models are rejected (use int8 for those).
    """
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.node):
        raise ConfigError("to_float16: the model has Q/DQ nodes; build it at int8 precision")
    keep = {
        n.input[i] for n in g.node for i in FP32_ONLY_INPUTS.get(n.op_type, ()) if i < len(n.input)
    }

    def half(t: onnx.TensorProto) -> onnx.TensorProto:
        arr = np.clip(onnx.numpy_helper.to_array(t), -FP16_MAX, FP16_MAX).astype(np.float16)
        return onnx.numpy_helper.from_array(arr, t.name)

    for i, t in enumerate(g.initializer):
        if t.data_type == f32 and t.name not in keep:
            g.initializer[i].CopyFrom(half(t))
    for node in g.node:
        for a in node.attribute:
            if set(node.output) & keep:
                continue
            if node.op_type in ("Constant", "ConstantOfShape") and a.name == "value":
                if a.t.data_type == f32:
                    a.t.CopyFrom(half(a.t))
            elif node.op_type == "Cast" and a.name == "to" and a.i == f32:
                a.i = f16
    del g.value_info[:]  # stale float32 annotations; TensorRT infers the types
    casts_in, casts_out = [], []
    for vi in g.input:
        if vi.type.tensor_type.elem_type == f32:
            new = vi.name + "_fp16"
            for node in g.node:
                node.input[:] = [new if x == vi.name else x for x in node.input]
            casts_in.append(
                onnx.helper.make_node("Cast", [vi.name], [new], to=f16, name=new + "_cast")
            )
    for vi in g.output:
        if vi.type.tensor_type.elem_type == f32:
            new = vi.name + "_fp16"
            for node in g.node:
                node.output[:] = [new if x == vi.name else x for x in node.output]
                node.input[:] = [new if x == vi.name else x for x in node.input]
            casts_out.append(
                onnx.helper.make_node("Cast", [new], [vi.name], to=f32, name=new + "_cast")
            )
    nodes = [*casts_in, *g.node, *casts_out]
    del g.node[:]
    g.node.extend(nodes)
    return m
