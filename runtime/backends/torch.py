"""Torch backend: runs a checkpoint directly (the reference the other backends match).

The runtime does not know how a ``.pt`` checkpoint becomes a module: a **checkpoint
loader** does, found through the Python entry point group ``understudy.checkpoint_loaders``
(the offline package declares ``understudy = "distill.checkpoint:load_for_inference"`` in
``pyproject.toml``), or passed as ``TorchBackend(path, loader=...)``.

A loader is ``loader(path: Path) -> (module, spec)``: ``module`` a ``torch.nn.Module`` that
maps a (B, 3, H, W) float32 tensor, normalized per ``spec``, to ``(boxes, scores)`` in the
``decoded_xyxy`` layout (boxes (B, A, 4) xyxy network-input pixels, scores (B, A, C)),
exactly like the ONNX export; ``spec`` its :class:`~runtime.model_spec.ModelSpec`. A
loader raises ModelFileError for a file it cannot read. Where no loader is installed (the
Jetson image) opening a ``.pt`` is a one-line BackendUnavailable saying what to install.

torch and the loader are imported only when a checkpoint is opened.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import BACKEND_MAX_BATCH, check_batch
from runtime.errors import BackendUnavailable, ModelFileError
from runtime.model_spec import ModelSpec

LOADER_GROUP = "understudy.checkpoint_loaders"
CheckpointLoader = Callable[[Path], tuple[Any, ModelSpec]]
_INSTALL = "pip install 'understudy[train]', or serve the exported .onnx instead"


def find_loader() -> CheckpointLoader:
    """The checkpoint loader installed under the entry point group ``LOADER_GROUP`` (the
    one named ``understudy`` when there are several), or a one-line BackendUnavailable."""
    found = sorted(importlib.metadata.entry_points(group=LOADER_GROUP), key=lambda ep: ep.name)
    if not found:
        raise BackendUnavailable(
            f"the torch backend needs a checkpoint loader ({LOADER_GROUP} entry point) and "
            f"none is installed: {_INSTALL}"
        )
    ep = next((ep for ep in found if ep.name == "understudy"), found[0])
    try:
        return ep.load()
    except Exception as e:  # ImportError where the offline package is absent, or broken
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise BackendUnavailable(
            f"the torch backend's checkpoint loader {ep.value} cannot be loaded "
            f"({type(e).__name__}: {first}): {_INSTALL}"
        ) from e


class TorchBackend:
    """Runs a ``.pt`` checkpoint with torch in inference mode (fp32).

    ``loader``: how to read the checkpoint (default: :func:`find_loader`).
    """

    name = "torch"

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        max_batch: int | None = None,
        loader: CheckpointLoader | None = None,
    ):
        try:
            import torch
        except ImportError as e:
            raise BackendUnavailable(f"the torch backend needs PyTorch: {_INSTALL}") from e
        loader = loader or find_loader()
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("device='cuda' asked, but torch sees no CUDA device")
        self.path = Path(path)
        self._torch = torch
        self._device = torch.device(device)
        if self._device.type == "cuda":  # the fp32 reference: no TF32 matmuls/convolutions
            torch.backends.cuda.matmul.allow_tf32 = False  # (process-wide flags)
            torch.backends.cudnn.allow_tf32 = False
        if threads:
            torch.set_num_threads(int(threads))  # process-wide, as torch offers no other way
        try:
            module, spec = loader(self.path)
        except (ModelFileError, BackendUnavailable):
            raise
        except Exception as e:
            raise ModelFileError(
                f"{self.path}: cannot load this checkpoint ({type(e).__name__}: {e}); "
                "pass a checkpoint written by `understudy train` or `understudy distill`"
            ) from e
        # The module always returns the decoded layout, whatever the ONNX export used.
        self.spec = dataclasses.replace(spec, output_layout="decoded_xyxy", precision="fp32")
        self.precision = "fp32"
        self.input_dtype = np.dtype(np.float32)
        self.max_batch = int(max_batch or BACKEND_MAX_BATCH)
        self._module = module.eval().to(self._device)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """batch (B, 3, H, W) float32 -> {"boxes": (B, A, 4), "scores": (B, A, C)}."""
        check_batch(batch, self.spec, self.input_dtype, self.max_batch)
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self._device)
            boxes, scores = self._module(x)
            return {"boxes": boxes.float().cpu().numpy(), "scores": scores.float().cpu().numpy()}

    def close(self) -> None:
        self._module = None
