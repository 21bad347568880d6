"""What every inference backend offers: the :class:`Backend` protocol and its batch check.

A backend takes a (B, 3, H, W) batch already letterboxed and normalized per its
:class:`ModelSpec` and returns the model's raw outputs by name (see
``runtime/model_spec.py`` for the two output layouts). Backends import their heavy
libraries (onnxruntime, tensorrt, torch) only when opened; ``runtime/backends/factory.py``
opens one by file type.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from runtime.errors import InputError
from runtime.model_spec import ModelSpec

BACKEND_MAX_BATCH = 32  # max_batch of a dynamic-batch backend when the caller gives none


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
