"""The engine cache: one TensorRT engine per (ONNX, TensorRT, GPU, precision, batch profile).

``<cache_dir>/<onnx stem>-<key>.engine`` + ``.engine.json`` (the ModelSpec at the engine's
precision; ``extra["tensorrt"]`` holds the key's parts, batch profile, engine hash, build
time). The key hashes (ONNX hash, TensorRT version, GPU name, compute capability,
precision, batch profile): an upgrade or another GPU means a new key and a rebuild; so does
an engine that fails its sidecar's hash or does not deserialize. The default cache is
``$XDG_CACHE_HOME/understudy/engines`` (``/cache`` in the Jetson image).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from runtime.engine.build import (
    PRECISIONS,
    BuildResult,
    Profile,
    batch_profile,
    build_engine,
    engine_loads,
)
from runtime.engine.environment import build_environment
from runtime.engine.onnx_io import load_onnx, onnx_spec
from runtime.errors import ConfigError, ModelFileError
from runtime.model_spec import ModelSpec

log = logging.getLogger(__name__)


def default_engine_cache() -> Path:
    """Where engines built from ONNX files are cached ($XDG_CACHE_HOME/understudy/engines)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "understudy" / "engines"


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes (first 16 hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def engine_cache_key(
    onnx_hash: str,
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    precision: str,
    profile: Profile | None = None,
) -> str:
    """16 hex digits identifying an engine: any changed component gives a new key."""
    parts = [onnx_hash, trt_version, gpu_name, compute_capability, precision, list(profile or ())]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _cached_ok(engine: Path, key: str, validate: Callable[[Path], bool]) -> str | None:
    """None when the cached engine can be used, else why it is rebuilt."""
    if not engine.is_file():
        return "no cached engine"
    try:
        info = ModelSpec.read_sidecar(engine).extra.get("tensorrt", {})
    except ModelFileError as e:
        return f"unreadable sidecar ({e})"
    if info.get("cache_key") != key:
        return "sidecar of another build"
    if info.get("engine_sha256") != file_hash(engine):
        return "engine file does not match its sidecar (corrupt or truncated)"
    if not validate(engine):
        return "TensorRT cannot deserialize the cached engine"
    return None


def build_or_load_engine(
    onnx_path: str | Path,
    precision: str | None = None,
    cache_dir: str | Path | None = None,
    *,
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    workspace_mb: int = 2048,
    verbose: bool = False,
    out: Callable[[str], None] = log.info,
    builder: Callable[..., BuildResult] = build_engine,
    validate: Callable[[Path], bool] = engine_loads,
    environment: Callable[[], tuple[str, str, str]] = build_environment,
) -> Path:
    """The cached engine for ``onnx_path`` at ``precision`` (default: the model's own),
    building it when missing, stale, corrupt or undeserializable. Returns its path; the
    ``<engine>.json`` sidecar holds the ModelSpec for the runtime.

    ``builder``, ``validate`` and ``environment`` are injectable (tests use fakes).
    """
    onnx_path = Path(onnx_path)
    model = load_onnx(onnx_path)
    spec = onnx_spec(model, onnx_path)
    precision = precision or spec.precision
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    if precision == "int8" and not qdq:
        raise ConfigError(
            f"{onnx_path}: int8 needs a Q/DQ model; make one with `understudy quantize`"
        )
    if qdq and precision != "int8":
        raise ConfigError(f"{onnx_path} is a Q/DQ (int8) model; compile it with --precision int8")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    batch_dim = dims[0].dim_value if dims and dims[0].HasField("dim_value") else None
    profile = batch_profile(batch_dim, min_batch, opt_batch, max_batch)

    trt_version, gpu, cc = environment()
    onnx_hash = file_hash(onnx_path)
    key = engine_cache_key(onnx_hash, trt_version, gpu, cc, precision, profile)
    cache = Path(cache_dir) if cache_dir else default_engine_cache()
    engine = cache / f"{onnx_path.stem}-{key}.engine"
    why = _cached_ok(engine, key, validate)
    if why is None:
        out(f"using cached engine {engine}")
        return engine
    out(f"building {engine.name}: {why}")
    machine = hashlib.sha256(f"{trt_version}|{gpu}|{cc}".encode()).hexdigest()[:12]
    timing = cache / f"timing-{machine}.cache"
    result = builder(
        onnx_path,
        engine,
        precision,
        profile=profile,
        workspace_mb=workspace_mb,
        timing_cache_path=timing,
        verbose=verbose,
        out=out,
    )
    info = {
        "cache_key": key,
        "onnx_hash": onnx_hash,
        "onnx_path": str(onnx_path),
        "tensorrt_version": trt_version,
        "gpu_name": gpu,
        "compute_capability": cc,
        "precision": precision,
        "batch_profile": list(profile) if profile else None,
        "engine_sha256": file_hash(engine),
        "build_seconds": round(result.seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    engine_spec = dataclasses.replace(
        spec, precision=precision, extra={**spec.extra, "tensorrt": info}
    )
    engine_spec.write_sidecar(engine)
    return engine
