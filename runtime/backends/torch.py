"""Torch backend: runs a checkpoint directly (the reference the other backends match).

torch and the offline package are imported only when a checkpoint is opened; the
module returned by ``distill.checkpoint.load_for_inference`` maps a (B, 3, H, W)
float32 tensor normalized per the spec to ``(boxes, scores)`` in the ``decoded_xyxy``
layout, exactly like the ONNX export.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from runtime.backends.base import BACKEND_MAX_BATCH, check_batch
from runtime.errors import BackendUnavailable, ModelFileError


class TorchBackend:
    """Runs a ``.pt`` checkpoint with torch in inference mode (fp32)."""

    name = "torch"

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        max_batch: int | None = None,
    ):
        try:
            import torch
        except ImportError as e:
            raise BackendUnavailable(
                "the torch backend needs PyTorch (pip install 'understudy[train]'); "
                "run the exported .onnx with the onnxruntime backend instead"
            ) from e
        try:
            from distill.checkpoint import load_for_inference
        except ImportError as e:
            raise BackendUnavailable(
                f"the torch backend needs the offline package (distill.checkpoint): {e}"
            ) from e
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
            module, spec = load_for_inference(self.path)
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
