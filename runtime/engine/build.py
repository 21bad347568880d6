"""One ONNX -> TensorRT engine build (TensorRT 10.3 on JetPack 6, and TensorRT 11).

No torch here; ``tensorrt`` is imported when a build starts (BackendUnavailable if absent).
:mod:`runtime.engine.cache` decides when to build; this module builds.

Precision: ``fp32`` as exported. ``fp16``: ``BuilderFlag.FP16`` on TensorRT 10; TensorRT 11
removed the precision flags, so there the network is strongly typed
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``) and the ONNX is converted in memory by
:func:`runtime.engine.fp16.to_float16` (fp16 weights and compute, float32 input/outputs
through Cast nodes, so the runtime feeds the same tensors). ``int8``: a Q/DQ ONNX from
``understudy quantize`` (explicit quantization, no calibrator), plus ``BuilderFlag.INT8`` on
TensorRT 10; float layers of the ONNX run in fp32. The API is chosen by feature
(``hasattr(trt.BuilderFlag, "FP16")``), not by version parsing.

Batch: a dynamic-batch input gets one optimization profile (min, opt, max); see
:func:`batch_profile`. The engine and the timing cache are written atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.engine.environment import import_tensorrt
from runtime.engine.fp16 import to_float16
from runtime.engine.onnx_io import load_onnx
from runtime.errors import ConfigError, ModelFileError, UnderstudyError
from runtime.files import write_atomic

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
Profile = tuple[int, int, int]  # (min, opt, max) batch
PROFILE_MAX_BATCH = 8  # profile maximum for a dynamic batch when --max-batch is not given


def batch_profile(
    batch_dim: int | str | None, min_batch: int | None, opt_batch: int | None, max_batch: int | None
) -> Profile | None:
    """The (min, opt, max) profile for a model's batch dim: None for a static batch (any
    requested range other than that batch is a ConfigError); defaults 1, min,
    PROFILE_MAX_BATCH."""
    asked = [b for b in (min_batch, opt_batch, max_batch) if b is not None]
    if any(b < 1 for b in asked):
        raise ConfigError(f"batch sizes must be >= 1, got {asked}")
    if isinstance(batch_dim, int) and batch_dim > 0:
        if any(b != batch_dim for b in asked):
            raise ConfigError(
                f"the model has a static batch of {batch_dim}; re-export it with "
                "--dynamic-batch to build a batch range"
            )
        return None
    lo = min_batch or 1
    hi = max_batch or max(PROFILE_MAX_BATCH, lo)
    opt = opt_batch or lo
    if not lo <= opt <= hi:
        raise ConfigError(f"need --min-batch <= --opt-batch <= --max-batch, got {lo}, {opt}, {hi}")
    return lo, opt, hi


def parser_errors(parser: Any) -> list[str]:
    """The ONNX parser's errors as "node NAME (OP): description" lines (node name and op
    where this TensorRT reports them, else the node index, else the description alone)."""

    def ask(err: Any, method: str) -> Any:
        fn = getattr(err, method, None)
        try:
            return fn() if callable(fn) else None
        except Exception:
            return None

    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        desc = str(ask(err, "desc") or err)
        name, op, index = ask(err, "node_name"), ask(err, "node_operator"), ask(err, "node")
        if name or op:
            lines.append(f"node {name or f'#{index}'} ({op or '?'}): {desc}")
        elif isinstance(index, int) and index >= 0:
            lines.append(f"node #{index}: {desc}")
        else:
            lines.append(desc)
    return lines


class ProgressPrinter:
    """Prints builder phases (nested ones indented; outer phases' steps every 10%)."""

    def __init__(self, out: Callable[[str], None], max_depth: int = 2) -> None:
        self.out, self.max_depth = out, max_depth
        self._depth: dict[str, int] = {}
        self._start: dict[str, float] = {}
        self._steps: dict[str, int] = {}
        self._shown: dict[str, int] = {}

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
        self._depth[phase_name], self._start[phase_name] = depth, time.perf_counter()
        self._steps[phase_name], self._shown[phase_name] = num_steps, 0
        if depth <= self.max_depth:
            self.out(f"{'  ' * depth}{phase_name} ({num_steps} steps)")

    def step_complete(self, phase_name: str, step: int) -> bool:
        n, depth = self._steps.get(phase_name, 0), self._depth.get(phase_name, 99)
        tenth = (10 * (step + 1)) // n if n else 0
        if depth <= 1 and n >= 10 and tenth > self._shown.get(phase_name, 0):
            self._shown[phase_name] = tenth
            self.out(f"{'  ' * (depth + 1)}{phase_name}: {step + 1}/{n}")
        return True  # False would cancel the build

    def phase_finish(self, phase_name: str) -> None:
        depth = self._depth.pop(phase_name, 0)
        seconds = time.perf_counter() - self._start.pop(phase_name, time.perf_counter())
        if depth <= self.max_depth:
            self.out(f"{'  ' * depth}{phase_name} done in {seconds:.1f} s")


def _progress_monitor(trt: Any, out: Callable[[str], None]) -> Any | None:
    """A ``trt.IProgressMonitor`` printing through :class:`ProgressPrinter` (TensorRT >= 10)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.printer = ProgressPrinter(out)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.printer.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return self.printer.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            self.printer.phase_finish(phase_name)

    return _Monitor()


@dataclass
class BuildResult:
    engine_path: Path
    precision: str
    profile: Profile | None
    seconds: float
    trt_version: str


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: str = "fp16",
    *,
    profile: Profile | None = None,
    workspace_mb: int = 2048,
    timing_cache_path: str | Path | None = None,
    verbose: bool = False,
    out: Callable[[str], None] = log.info,
) -> BuildResult:
    """Build and serialize one engine (minutes on a Jetson; progress goes to ``out``).

    ``profile`` is the (min, opt, max) batch for a dynamic-batch input (None: static).
    Raises BackendUnavailable (no TensorRT), ModelFileError (parser errors, each with node
    name and op), UnderstudyError (the build failed).
    """
    trt = import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    typed = not hasattr(trt.BuilderFlag, "FP16")  # TensorRT 11: strongly typed only
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    data = onnx_path.read_bytes()
    if typed and precision == "fp16":
        data = to_float16(load_onnx(onnx_path)).SerializeToString()
    if not parser.parse(data, str(onnx_path)):
        errors = "; ".join(parser_errors(parser)) or "no detail given"
        raise ModelFileError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse it: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if not typed and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.INT8)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means IEEE fp32, not TF32 matmuls
    inp = network.get_input(0)
    if profile is not None:
        rest = tuple(inp.shape)[1:]
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(inp.name, *((b, *rest) for b in profile))
        config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache_path) if timing_cache_path else None
    cached = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    try:
        cache = config.create_timing_cache(cached)
        fits = cache is not None and config.set_timing_cache(cache, ignore_mismatch=False)
    except Exception:  # a corrupt cache file
        fits = False
    if not fits:
        out(f"timing cache {cache_path} does not fit this TensorRT/GPU; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    monitor = _progress_monitor(trt, out)
    if monitor is not None:
        config.progress_monitor = monitor

    mode = "strongly typed" if typed else "builder flags"
    batch = f", batch {profile[0]}..{profile[2]} (opt {profile[1]})" if profile else ""
    out(f"building a {precision} engine ({mode}), TensorRT {trt.__version__}{batch}")
    t0 = time.perf_counter()
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise UnderstudyError(
            f"{onnx_path}: TensorRT could not build a {precision} engine "
            "(see the TensorRT messages above)"
        )
    seconds = time.perf_counter() - t0
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(engine_path, bytes(blob))
    if cache_path is not None:
        write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    out(f"built {engine_path} in {seconds:.1f} s")
    return BuildResult(engine_path, precision, profile, seconds, trt.__version__)


def engine_loads(path: Path) -> bool:
    """True when this TensorRT deserializes the engine file (needs the GPU)."""
    trt = import_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    try:
        return runtime.deserialize_cuda_engine(path.read_bytes()) is not None
    except Exception:
        return False
