"""Pre-flight check of an ONNX file for TensorRT, without TensorRT (runs in CI).

``understudy compile --check student.onnx`` reports, and fails on:

- ops that are not in TensorRT's supported ONNX operator list (kept as data in
  ``runtime/engine/tensorrt_onnx_ops.json``, with the TensorRT version it was taken
  from), ops of a custom domain, and Q/DQ nodes TensorRT's explicit quantization rejects
  (UINT8 or non-zero zero points, INT32 dequantization);
- dynamic dimensions anywhere but the batch axis of an input (the optimization profile
  covers the batch only), and a batch profile a static-batch model cannot honour;
- float64 tensors: initializers, constants, inputs/outputs/value_info, Cast to DOUBLE.

It only reads the file (``onnx`` and the standard library), so it runs on a laptop, in CI
or on the Jetson before a minutes-long engine build.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from runtime.engine.build import batch_profile
from runtime.engine.onnx_io import load_onnx
from runtime.errors import ConfigError

OPS_FILE = Path(__file__).parent / "tensorrt_onnx_ops.json"
_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Problem:
    """One reason TensorRT would reject the model: the node (or tensor) and its op."""

    node: str
    op: str
    what: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op}): {self.what}"


@dataclass
class PreflightReport:
    """What the check found; ``ok`` is True when there is no problem."""

    source: str
    opset: int
    tensorrt_version: str
    op_counts: dict[str, int]
    op_status: dict[str, str]  # op -> "ok" | "unsupported" | "unknown"
    inputs: list[tuple[str, list[int | str]]]
    batch_profile: tuple[int, int] | None  # (min, max) used for a dynamic batch
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        """A human-readable report: inputs, op census with status, problems."""
        lines = [
            f"{self.source}: opset {self.opset}, checked against the TensorRT "
            f"{self.tensorrt_version} ONNX operator list"
        ]
        for name, dims in self.inputs:
            lines.append(f"  input {name}: {dims}")
        if self.batch_profile:
            lines.append(
                f"  dynamic batch profile: {self.batch_profile[0]}..{self.batch_profile[1]}"
            )
        lines.append(f"  {'op':<24} {'count':>5}  status")
        for op, n in sorted(self.op_counts.items()):
            lines.append(f"  {op:<24} {n:>5}  {self.op_status[op]}")
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  {p}" for p in self.problems]
        else:
            lines.append("no problems: TensorRT should parse this model")
        return "\n".join(lines)


@lru_cache(maxsize=1)
def operator_list() -> dict[str, Any]:
    """The TensorRT ONNX operator list: ``tensorrt_version``, ``opsets``, ``supported``
    (list of op names), ``unsupported`` (op -> reason)."""
    return json.loads(OPS_FILE.read_text())


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"<node #{index}>"


def _walk(graph: onnx.GraphProto, prefix: str = "") -> Iterator[tuple[str, onnx.NodeProto]]:
    """(label, node) for every node, sub-graphs of If/Loop/Scan included."""
    for i, node in enumerate(graph.node):
        label = prefix + _node_label(node, i)
        yield label, node
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                yield from _walk(sub, f"{label}/{attr.name}/")


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for _, node in _walk(graph):
        for attr in node.attribute:
            yield from ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs)


def _attr(node: onnx.NodeProto, name: str) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def float64_problems(model: onnx.ModelProto) -> list[Problem]:
    """Every float64 tensor: initializers, graph inputs/outputs/value_info, constants, casts."""
    double = TensorProto.DOUBLE
    found: list[Problem] = []
    for g in _graphs(model.graph):
        for init in g.initializer:
            if init.data_type == double:
                found.append(Problem(init.name, "initializer", "float64 weights"))
        for kind, infos in (("input", g.input), ("output", g.output), ("value_info", g.value_info)):
            for vi in infos:
                if vi.type.tensor_type.elem_type == double:
                    found.append(Problem(vi.name, kind, "float64 tensor"))
    for label, node in _walk(model.graph):
        if node.op_type == "Cast" and _attr(node, "to") == double:
            found.append(Problem(label, node.op_type, "casts to float64 (DOUBLE)"))
        if node.op_type in ("Constant", "ConstantOfShape"):
            value = _attr(node, "value")
            if isinstance(value, TensorProto) and value.data_type == double:
                found.append(Problem(label, node.op_type, "float64 constant"))
    return found


def _qdq_problems(model: onnx.ModelProto) -> list[Problem]:
    """Q/DQ nodes TensorRT's explicit quantization rejects."""
    inits = {i.name: i for g in _graphs(model.graph) for i in g.initializer}
    found = []
    for label, node in _walk(model.graph):
        if node.op_type not in _QDQ:
            continue
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        x = inits.get(node.input[0])
        if zp is not None and zp.data_type == TensorProto.UINT8:
            found.append(Problem(label, node.op_type, "UINT8 quantization (TensorRT needs INT8)"))
        elif zp is not None and onnx.numpy_helper.to_array(zp).any():
            found.append(Problem(label, node.op_type, "non-zero zero point (needs symmetric INT8)"))
        if (
            node.op_type == "DequantizeLinear"
            and x is not None
            and x.data_type == TensorProto.INT32
        ):
            found.append(Problem(label, node.op_type, "INT32 dequantization (quantized bias)"))
    return found


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for d in vi.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return dims


def _shape_problems(
    model: onnx.ModelProto, min_batch: int | None, max_batch: int | None
) -> tuple[list[Problem], tuple[int, int] | None]:
    inits = {i.name for i in model.graph.initializer}
    found, profile = [], None
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = _dims(vi)
        for axis, d in enumerate(dims[1:], start=1):
            if not isinstance(d, int) or d <= 0:
                found.append(
                    Problem(
                        vi.name,
                        "input",
                        f"dynamic dim {d!r} on axis {axis}: only the "
                        "batch axis may be dynamic; re-export with a fixed --size",
                    )
                )
        if not dims:
            continue
        batch = dims[0]
        if isinstance(batch, int) and batch > 0:
            wanted = {b for b in (min_batch, max_batch) if b is not None}
            if wanted - {batch}:
                found.append(
                    Problem(
                        vi.name,
                        "input",
                        f"static batch {batch} cannot serve a batch "
                        f"profile {min_batch}..{max_batch}; re-export with --dynamic-batch",
                    )
                )
        else:
            lo, _, hi = batch_profile(batch, min_batch, None, max_batch)
            profile = (lo, hi)
    return found, profile


def check_model(
    model: onnx.ModelProto,
    *,
    min_batch: int | None = None,
    max_batch: int | None = None,
    source: str = "model",
) -> PreflightReport:
    """Check a loaded model; ``min_batch``/``max_batch`` are the profile to be built."""
    if (min_batch is not None and min_batch < 1) or (max_batch is not None and max_batch < 1):
        raise ConfigError(f"batch sizes must be >= 1, got min {min_batch}, max {max_batch}")
    if min_batch and max_batch and min_batch > max_batch:
        raise ConfigError(f"--min-batch {min_batch} is larger than --max-batch {max_batch}")
    ops = operator_list()
    supported, unsupported = set(ops["supported"]), ops["unsupported"]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    problems, counts, status = [], Counter(), {}
    for label, node in _walk(model.graph):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        counts[op] += 1
        if node.domain not in ("", "ai.onnx"):
            status[op] = "unsupported"
            problems.append(
                Problem(
                    label,
                    op,
                    f"custom-domain op ({node.domain}): no TensorRT layer without a plugin",
                )
            )
        elif op in supported:
            status[op] = "ok"
        elif op in unsupported:
            status[op] = "unsupported"
            problems.append(Problem(label, op, f"not supported by TensorRT: {unsupported[op]}"))
        else:
            status[op] = "unknown"
            problems.append(
                Problem(
                    label,
                    op,
                    f"not in the TensorRT {ops['tensorrt_version']} supported-operator list",
                )
            )
    shape_problems, profile = _shape_problems(model, min_batch, max_batch)
    problems += shape_problems + float64_problems(model) + _qdq_problems(model)
    warnings = []
    lo, hi = ops["opsets"]["min"], ops["opsets"]["max"]
    if not lo <= opset <= hi:
        warnings.append(
            f"opset {opset} is outside {lo}..{hi} parsed by TensorRT "
            f"{ops['tensorrt_version']}; export with --opset 17"
        )
    inputs = [
        (vi.name, _dims(vi))
        for vi in model.graph.input
        if vi.name not in {i.name for i in model.graph.initializer}
    ]
    return PreflightReport(
        source,
        opset,
        ops["tensorrt_version"],
        dict(counts),
        status,
        inputs,
        profile,
        problems,
        warnings,
    )


def check_file(
    path: str | Path, *, min_batch: int | None = None, max_batch: int | None = None
) -> PreflightReport:
    """Load ``path`` (ModelFileError if unreadable) and :func:`check_model` it."""
    return check_model(load_onnx(path), min_batch=min_batch, max_batch=max_batch, source=str(path))
