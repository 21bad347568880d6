"""TensorRT backend (TensorRT 10.3 on JetPack 6, and TensorRT 11).

Name-based tensors only (``num_io_tensors``, ``get_tensor_name``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``). Device buffers and pinned host buffers
are allocated once for the profile's largest batch; one CUDA stream; any batch within
the optimization profile. CUDA memory comes from pycuda when importable (as on the
Jetson image), else from cuda-python's runtime bindings. Nothing here is imported
until a TensorRT model is opened.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import check_batch
from runtime.engine.environment import import_tensorrt
from runtime.engine.onnx_io import read_onnx_spec
from runtime.errors import BackendUnavailable, ModelFileError
from runtime.model_spec import ModelSpec, sidecar_path


class _PyCuda:
    """Pinned host memory, device memory and one stream through pycuda.

    Uses the device's primary context (the one TensorRT's runtime API uses) and makes it
    current only inside ``active()``, so any thread may call ``infer``.
    """

    def __init__(self) -> None:
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        self.ctx = cuda.Device(0).retain_primary_context()
        self._dev: list[Any] = []
        with self.active():
            self.stream = cuda.Stream()
        self.handle = self.stream.handle

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self.ctx.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def device(self, nbytes: int) -> int:
        self._dev.append(self.cuda.mem_alloc(max(nbytes, 1)))
        return int(self._dev[-1])

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(dst, src, self.stream)

    def d2h(self, dst: np.ndarray, src: int) -> None:
        self.cuda.memcpy_dtoh_async(dst, src, self.stream)

    def sync(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        with self.active():
            for a in self._dev:
                a.free()
            self._dev.clear()
            self.stream = None


class _CudaPython:
    """The same through cuda-python's ``cudart`` bindings."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        self.rt = cudart
        self.stream = self._ok(cudart.cudaStreamCreate())
        self.handle = int(self.stream)
        self._dev: list[Any] = []
        self._host: list[Any] = []

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        yield  # the runtime API binds the primary context in every thread

    def _ok(self, result: tuple) -> Any:
        err, *rest = result
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA error {err}")
        return rest[0] if rest else None

    def device(self, nbytes: int) -> int:
        self._dev.append(self._ok(self.rt.cudaMalloc(max(nbytes, 1))))
        return int(self._dev[-1])

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = self._ok(self.rt.cudaMallocHost(max(nbytes, 1)))
        self._host.append(ptr)
        raw = (ctypes.c_byte * max(nbytes, 1)).from_address(int(ptr))
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, self.stream))

    def d2h(self, dst: np.ndarray, src: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, self.stream))

    def sync(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream))

    def close(self) -> None:
        for p in self._dev:
            self.rt.cudaFree(p)
        for p in self._host:
            self.rt.cudaFreeHost(p)
        self._dev.clear()
        self._host.clear()
        self.rt.cudaStreamDestroy(self.stream)


def _cuda() -> _PyCuda | _CudaPython:
    try:
        return _PyCuda()
    except ImportError:
        pass
    try:
        return _CudaPython()
    except ImportError as e:
        raise BackendUnavailable(
            "the tensorrt backend needs pycuda or cuda-python for CUDA memory: "
            "pip install pycuda (or cuda-python)"
        ) from e


class TensorRTBackend:
    """Runs a serialized TensorRT engine; the spec comes from ``<engine>.json``."""

    name = "tensorrt"

    def __init__(self, path: str | Path, spec: ModelSpec | None = None):
        trt = import_tensorrt()
        self.path = Path(path)
        self.spec = spec or ModelSpec.read_sidecar(self.path)
        self.precision = self.spec.precision
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        try:
            engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        except Exception:  # some versions raise instead of returning None
            engine = None
        if engine is None:
            raise ModelFileError(
                f"{self.path}: TensorRT {trt.__version__} cannot deserialize this engine (built "
                "for another TensorRT version or GPU, or corrupt); rebuild it with "
                "`understudy compile`"
            )
        self._engine = engine
        self._cuda = _cuda()
        with self._cuda.active():
            self._context = engine.create_execution_context()
            self._setup(trt)

    def _setup(self, trt: Any) -> None:
        engine, ctx = self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1:
            raise ModelFileError(f"{self.path}: expected one input tensor, found {inputs}")
        missing = [n for n in self.spec.output_names if n not in outputs]
        if missing:
            raise ModelFileError(
                f"{self.path}: engine outputs {outputs} lack {missing} of the "
                f"{self.spec.output_layout!r} layout; rebuild from an Understudy ONNX export"
            )
        self._input = inputs[0]
        self.input_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._input)))
        shape = tuple(engine.get_tensor_shape(self._input))
        h, w = self.spec.input_size
        if len(shape) != 4 or tuple(shape[1:]) != (3, h, w):
            raise ModelFileError(
                f"{self.path}: engine input shape {shape} does not match the spec's "
                f"(B, 3, {h}, {w})"
            )
        self.dynamic = shape[0] == -1
        if self.dynamic:
            lo, _, hi = engine.get_tensor_profile_shape(self._input, 0)
            self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        else:
            self.min_batch = self.max_batch = int(shape[0])
        in_shape = (self.max_batch, 3, h, w)
        if self.dynamic:
            ctx.set_input_shape(self._input, in_shape)
        self._batch = self.max_batch
        self._host_in = self._cuda.pinned(in_shape, self.input_dtype)
        self._dev_in = self._cuda.device(self._host_in.nbytes)
        ctx.set_tensor_address(self._input, self._dev_in)
        self._outputs: dict[str, tuple[np.ndarray, int]] = {}
        for name in outputs:  # every output needs an address, even one the spec ignores
            out_shape = tuple(ctx.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            host = self._cuda.pinned(out_shape, dtype)
            dev = self._cuda.device(host.nbytes)
            ctx.set_tensor_address(name, dev)
            self._outputs[name] = (host, dev)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """batch (B, 3, H, W) ``input_dtype``, B within the engine's profile -> outputs by name."""
        check_batch(batch, self.spec, self.input_dtype, self.max_batch)
        n = batch.shape[0]
        run_n = max(n, self.min_batch)  # a static engine always runs its full batch
        if self.dynamic and run_n != self._batch:
            self._context.set_input_shape(self._input, (run_n, *batch.shape[1:]))
            self._batch = run_n
        self._host_in[:n] = batch
        with self._cuda.active():
            self._cuda.h2d(self._dev_in, self._host_in[:run_n])
            if not self._context.execute_async_v3(self._cuda.handle):
                raise RuntimeError(f"{self.path}: TensorRT execute_async_v3 failed")
            for name in self.spec.output_names:
                host, dev = self._outputs[name]
                self._cuda.d2h(host[:run_n], dev)
            self._cuda.sync()
        return {name: self._outputs[name][0][:n].copy() for name in self.spec.output_names}

    def close(self) -> None:
        if self._cuda is not None:
            self._context = None
            self._engine = None
            self._cuda.close()
            self._cuda = None


def open_onnx_with_tensorrt(
    onnx_path: Path, precision: str | None, cache_dir: str | Path | None = None
) -> TensorRTBackend:
    """Compile ``onnx_path`` at ``precision`` (default: the model's) through the engine
    cache (:mod:`runtime.engine.cache`; ``cache_dir`` None: the default cache) and open
    the engine."""
    from runtime.engine.cache import build_or_load_engine

    import_tensorrt()
    spec = read_onnx_spec(onnx_path)
    precision = precision or spec.precision
    engine_path = Path(build_or_load_engine(onnx_path, precision, cache_dir))
    if sidecar_path(engine_path).is_file():
        return TensorRTBackend(engine_path)
    return TensorRTBackend(engine_path, spec=dataclasses.replace(spec, precision=precision))
