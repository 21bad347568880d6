"""ONNX files: read with a clear error, their ModelSpec, Understudy metadata, atomic save.

Shared by export and quantize (offline) and by compile and the TensorRT backend (on the
device). Needs only ``onnx``.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from runtime.errors import ModelFileError
from runtime.files import write_atomic
from runtime.model_spec import PREFIX, ModelSpec, read_spec


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file (weights included) or raise ModelFileError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: ONNX file not found")
    try:
        model = onnx.load(str(p))
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf DecodeError, checker's ValidationError, external data
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ModelFileError(
            f"{p}: not a valid ONNX model ({type(e).__name__}: {first}); the file is truncated "
            "or corrupt: re-export it with `understudy export`"
        ) from e
    if not model.graph.node or not model.graph.input or not model.graph.output:
        raise ModelFileError(f"{p}: ONNX graph is empty or has no inputs/outputs; re-export it")
    return model


def onnx_spec(model: onnx.ModelProto, path: str | Path) -> ModelSpec:
    """The ModelSpec of an ONNX model read from ``path``: its ``metadata_props``, else the
    ``<file>.json`` sidecar beside ``path``."""
    return read_spec(Path(path), {p.key: p.value for p in model.metadata_props})


def read_onnx_spec(path: str | Path) -> ModelSpec:
    """The ModelSpec of an ONNX file without loading its weights or checking the graph."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ModelFileError(f"{path}: not a readable ONNX file ({first}); re-export it") from e
    return onnx_spec(model, path)


def set_metadata(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """Replace the model's ``understudy.*`` metadata_props with ``spec``'s."""
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for k, v in [*keep, *spec.to_metadata_props().items()]:
        model.metadata_props.add(key=k, value=v)


def save_onnx_atomic(model: onnx.ModelProto, path: str | Path) -> Path:
    """Serialize ``model`` (under 2 GB, weights inline) atomically to ``path``."""
    return write_atomic(path, model.SerializeToString())
