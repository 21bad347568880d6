"""`open_backend`: open a model file with the backend its type implies (or the one asked).

An explicit ``match`` on the file type; each backend module is imported only when a model
of its kind is opened, so a missing library (tensorrt, torch) matters only to its users.
"""

from __future__ import annotations

from pathlib import Path

from runtime.backends.base import Backend
from runtime.errors import ConfigError, ModelFileError

BACKENDS = ("onnxruntime", "tensorrt", "torch")
DEVICES = ("cpu", "cuda")


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
      ``backend="tensorrt"`` the ONNX file is compiled at ``precision`` (default: the
      model's) through the engine cache in ``cache_dir`` (default:
      :func:`runtime.engine.cache.default_engine_cache`) and the engine is run.
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

            return open_onnx_with_tensorrt(p, precision, cache_dir)
        case ("torch", "torch"):
            from runtime.backends.torch import TorchBackend

            return TorchBackend(p, device=device, threads=threads, max_batch=max_batch)
        case _:
            raise ModelFileError(
                f"{p}: the {kind} backend cannot run a {p.suffix} file "
                f"(that file type runs on {suffix_kind})"
            )
