"""What every inference backend offers, and `open_backend`: pick one by file type.

A backend takes a (B, 3, H, W) batch already letterboxed and normalized per its
:class:`ModelSpec` and returns the model's raw outputs by name (see
``runtime/model_spec.py`` for the two output layouts). Backends import their heavy
libraries (onnxruntime, tensorrt, torch) only when opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from runtime.errors import ConfigError, InputError, ModelFileError
from runtime.model_spec import PREFIX, ModelSpec, sidecar_path

BACKENDS = ("onnxruntime", "tensorrt", "torch")
DEVICES = ("cpu", "cuda")


@runtime_checkable
class Backend(Protocol):
    """An opened model. ``infer`` is not thread-safe: one caller at a time."""

    name: str  # "onnxruntime" | "tensorrt" | "torch"
    precision: str  # "fp32" | "fp16" | "int8"
    spec: ModelSpec
    input_dtype: np.dtype
    max_batch: int  # largest B accepted by infer (1 for a static batch-1 model)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """batch: (B, 3, H, W) of ``input_dtype``, 1 <= B <= max_batch.

        Returns output name -> array with leading dim B (arrays owned by the caller).
        """
        ...

    def close(self) -> None: ...


def check_batch(batch: object, spec: ModelSpec, dtype: np.dtype, max_batch: int) -> np.ndarray:
    """Raise InputError unless ``batch`` is (B, 3, H, W) of ``dtype`` with 1 <= B <= max_batch."""
    h, w = spec.input_size
    expected = f"(B, 3, {h}, {w}) {np.dtype(dtype).name} with 1 <= B <= {max_batch}"
    if not isinstance(batch, np.ndarray):
        raise InputError(
            f"model input: expected a numpy array {expected}, got {type(batch).__name__}"
        )
    if batch.ndim != 4 or batch.shape[1:] != (3, h, w) or not 1 <= batch.shape[0] <= max_batch:
        raise InputError(f"model input: expected shape {expected}, got {tuple(batch.shape)}")
    if batch.dtype != dtype:
        raise InputError(f"model input: expected dtype {np.dtype(dtype).name}, got {batch.dtype}")
    return batch


def read_spec(path: Path, metadata: dict[str, str]) -> ModelSpec:
    """The spec from ONNX ``metadata_props``, else from the ``<model>.json`` sidecar."""
    if any(k.startswith(PREFIX) for k in metadata):
        return ModelSpec.from_metadata_props(metadata, source=str(path))
    if sidecar_path(path).is_file():
        return ModelSpec.read_sidecar(path)
    raise ModelFileError(
        f"{path} has no Understudy metadata and no sidecar {sidecar_path(path).name}; "
        "export it with `understudy export` or write the sidecar JSON next to it"
    )


def backend_for_suffix(path: Path) -> str:
    """The backend that runs a model file of this type."""
    match path.suffix.lower():
        case ".onnx":
            return "onnxruntime"
        case ".engine" | ".plan":
            return "tensorrt"
        case ".pt" | ".pth":
            return "torch"
        case _:
            raise ModelFileError(
                f"{path}: unknown model file type {path.suffix!r}; pass an exported .onnx, "
                "a compiled TensorRT .engine/.plan, or a .pt checkpoint"
            )


def default_engine_cache() -> Path:
    """Where engines built from ONNX files are cached ($XDG_CACHE_HOME/understudy/engines)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "understudy" / "engines"


def open_backend(
    path: str | Path,
    *,
    backend: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    providers: list[str] | None = None,
    max_batch: int | None = None,
    precision: str | None = None,
    cache_dir: str | Path | None = None,
) -> Backend:
    """Open ``path`` with the backend its suffix implies, or with ``backend`` if given.

    - ``.onnx`` -> ONNX Runtime (``device``, ``threads``, ``providers`` apply); with
      ``backend="tensorrt"`` the ONNX file is compiled (cached in ``cache_dir``) at
      ``precision`` (default: the model's) and the engine is run.
    - ``.engine`` / ``.plan`` -> TensorRT (spec from the ``<engine>.json`` sidecar).
    - ``.pt`` -> torch (the reference; ``device``, ``threads`` apply).
    ``max_batch`` caps the batch of dynamic-batch models.
    Raises ModelFileError for a missing/unknown/corrupt file, BackendUnavailable when the
    backend's libraries are not installed.
    """
    p = Path(path)
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {DEVICES}, got {device!r}")
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not p.is_file():
        what = "is a directory, not a model file" if p.is_dir() else "model file not found"
        raise ModelFileError(
            f"{p}: {what}; pass an exported .onnx, a compiled .engine/.plan, or a .pt checkpoint"
        )
    suffix_kind = backend_for_suffix(p)
    kind = backend or suffix_kind
    match (kind, suffix_kind):
        case ("onnxruntime", "onnxruntime"):
            from runtime.backends.onnxruntime import OnnxRuntimeBackend

            return OnnxRuntimeBackend(
                p, device=device, threads=threads, providers=providers, max_batch=max_batch
            )
        case ("tensorrt", "tensorrt"):
            from runtime.backends.tensorrt import TensorRTBackend

            return TensorRTBackend(p)
        case ("tensorrt", "onnxruntime"):
            from runtime.backends.tensorrt import open_onnx_with_tensorrt

            return open_onnx_with_tensorrt(p, precision, Path(cache_dir or default_engine_cache()))
        case ("torch", "torch"):
            from runtime.backends.torch import TorchBackend

            return TorchBackend(p, device=device, threads=threads, max_batch=max_batch)
        case _:
            raise ModelFileError(
                f"{p}: the {kind} backend cannot run a {p.suffix} file "
                f"(that file type runs on {suffix_kind})"
            )
