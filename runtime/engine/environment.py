"""What this machine builds engines with: the ``tensorrt`` module, its version, the GPU.

``tensorrt`` is imported only when asked for (BackendUnavailable with what to do if absent),
so this module imports anywhere.
"""

from __future__ import annotations

import subprocess
from typing import Any

from runtime.errors import BackendUnavailable


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or BackendUnavailable saying where to get it."""
    try:
        import tensorrt
    except ImportError as e:
        raise BackendUnavailable(
            "NVIDIA TensorRT (Python module `tensorrt`) is not installed here: use the Jetson "
            "image (Dockerfile.jetson; JetPack 6 ships TensorRT 10.3), or run the .onnx with "
            "--backend onnxruntime; `understudy compile --check` runs without it"
        ) from e
    return tensorrt


def gpu_info() -> tuple[str, str]:
    """(name, compute capability "major.minor") of CUDA device 0, from pycuda, cuda-python
    or ``nvidia-smi``, whichever answers first."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(0)
        return dev.name(), "{}.{}".format(*dev.compute_capability())
    except Exception:  # not installed, or no driver/device: try the next source
        pass
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        err, prop = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
            return name.rstrip("\x00"), f"{prop.major}.{prop.minor}"
    except Exception:
        pass
    try:
        query = ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"]
        first = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True)
        name, cc = first.stdout.strip().splitlines()[0].rsplit(",", 1)
        return name.strip(), cc.strip()
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        pass
    raise BackendUnavailable("cannot identify the GPU: no pycuda, cuda-python or nvidia-smi")


def build_environment() -> tuple[str, str, str]:
    """(TensorRT version, GPU name, compute capability) of this machine."""
    return (import_tensorrt().__version__, *gpu_info())
