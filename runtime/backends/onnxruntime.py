"""ONNX Runtime backend: the CPU default; CUDA / TensorRT execution providers on request."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from runtime.backends.base import BACKEND_MAX_BATCH, check_batch
from runtime.errors import BackendUnavailable, ModelFileError
from runtime.model_spec import read_spec

log = logging.getLogger(__name__)

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def choose_providers(device: str, available: list[str]) -> list:
    """Execution providers for ``device``: TensorRT, CUDA when offered, CPU always last."""
    chosen: list = []
    if device == "cuda":
        if "TensorrtExecutionProvider" in available:
            from runtime.engine.cache import default_engine_cache

            cache = default_engine_cache() / "onnxruntime-trt"
            opts = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
            chosen.append(("TensorrtExecutionProvider", opts))
        if "CUDAExecutionProvider" in available:
            chosen.append("CUDAExecutionProvider")
        if not chosen:
            log.warning(
                "device='cuda' asked, but this onnxruntime offers only %s; running on the CPU "
                "(install onnxruntime-gpu for CUDA)",
                ", ".join(available),
            )
    chosen.append("CPUExecutionProvider")
    return chosen


class OnnxRuntimeBackend:
    """Runs an Understudy ONNX model with ONNX Runtime.

    Session: all graph optimizations, memory pattern, sequential execution, intra-op
    threads ``threads`` (None: ONNX Runtime's default, one per core).
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        providers: list[str] | None = None,
        max_batch: int | None = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from e
        self.path = Path(path)
        available = ort.get_available_providers()
        if providers:
            missing = [p for p in providers if p not in available]
            if missing:
                raise BackendUnavailable(
                    f"execution providers {missing} are not in this onnxruntime "
                    f"(available: {available})"
                )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_mem_pattern = True
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(self.path),
                sess_options=opts,
                providers=providers or choose_providers(device, available),
            )
        except Exception as e:  # onnxruntime raises several untyped errors for bad files
            raise ModelFileError(
                f"{self.path}: ONNX Runtime cannot load it ({_first_line(e)}); the file is "
                "truncated, corrupt or not an ONNX model: re-export it"
            ) from e
        self.providers: list[str] = self._session.get_providers()
        self.spec = read_spec(self.path, self._session.get_modelmeta().custom_metadata_map)
        self.precision = self.spec.precision
        self._read_io(max_batch)

    def _read_io(self, max_batch: int | None) -> None:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"{self.path}: expected one input, found {len(inputs)}")
        inp = inputs[0]
        self._input_name = inp.name
        if inp.type not in _DTYPES:
            raise ModelFileError(f"{self.path}: input {inp.name!r} has unsupported type {inp.type}")
        self.input_dtype = np.dtype(_DTYPES[inp.type])
        shape = list(inp.shape)
        h, w = self.spec.input_size
        fixed = [d for d in shape[1:] if isinstance(d, int)]
        if len(shape) != 4 or (len(fixed) == 3 and tuple(shape[1:]) != (3, h, w)):
            raise ModelFileError(
                f"{self.path}: input shape {shape} does not match the spec's (B, 3, {h}, {w})"
            )
        self.static_batch: int | None = shape[0] if isinstance(shape[0], int) else None
        if self.static_batch is not None:
            self.max_batch = self.static_batch
            self._padded = np.zeros((self.static_batch, 3, h, w), self.input_dtype)
        else:
            self.max_batch = int(max_batch or BACKEND_MAX_BATCH)
        outputs = [o.name for o in self._session.get_outputs()]
        missing = [n for n in self.spec.output_names if n not in outputs]
        if missing:
            raise ModelFileError(
                f"{self.path}: outputs {outputs} lack {missing} of the "
                f"{self.spec.output_layout!r} layout; re-export the model"
            )
        self._output_names = list(self.spec.output_names)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """batch (B, 3, H, W) ``input_dtype`` -> the spec's two outputs by name, leading dim B."""
        check_batch(batch, self.spec, self.input_dtype, self.max_batch)
        n = batch.shape[0]
        feed = batch
        if self.static_batch is not None and n < self.static_batch:
            self._padded[:n] = batch  # a static-batch model always runs its full batch
            feed = self._padded
        outs = self._session.run(self._output_names, {self._input_name: feed})
        return {name: out[:n] for name, out in zip(self._output_names, outs)}

    def close(self) -> None:
        self._session = None
