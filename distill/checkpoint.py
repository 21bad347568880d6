"""Checkpoints: one file per model, holding only that model (never a teacher or adapters).

Layout (plain containers and tensors, so ``torch.load(weights_only=True)`` reads it)::

    {"format": "understudy-checkpoint", "version": 1, "kind": "detector",
     "preset": "nano", "scale": {"width", "depth", "max_channels"}, "reg_max": 16,
     "class_names": [...], "img_size": 320, "model": state_dict (EMA weights),
     "config": {...}, "metrics": {...}, "teacher": "path or ''", "data": "...",
     "train_state": {...}  # only in last.pt: raw weights, optimizer, epoch, step, ema
    }

``train_state`` (see :meth:`distill.trainee.Trainee.train_state`) holds what an exact
resume needs: raw weights, optimizer, EMA, KD modules, the position (``epoch`` to run
and the ``batch`` of it to start at: 0 at an epoch's end, more in a checkpoint written
mid-epoch), ``step``, ``world`` (processes that wrote it), ``ranks`` (per process: the
RNG states of :func:`rng_state` and the epoch's loss sums so far) and ``plugin`` (the
distiller's state: the unlabelled frame stream's position).
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.models.detector import DecodedDetector, Detector
from distill.models.presets import PRESETS, Scale, build_detector
from runtime.errors import ModelFileError
from runtime.files import atomic_path
from runtime.model_spec import ModelSpec

FORMAT = "understudy-checkpoint"


def save_atomic(obj: Any, path: str | Path, fsync: bool = True) -> Path:
    """torch.save to a temp file in the same folder, flushed to the disk (``fsync``, with
    the folder after the rename), then renamed into place: a killed job or machine leaves
    the previous checkpoint or the new one, whole."""
    with atomic_path(path, fsync=fsync) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def rng_state() -> dict[str, Any]:
    """This process's global RNG states (python, numpy, torch, CUDA) as plain containers
    and tensors, so that ``torch.load(weights_only=True)`` reads them back."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_checkpoint(
    model: Detector,
    *,
    preset: str,
    scale: Scale,
    class_names: tuple[str, ...],
    img_size: int,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    teacher: str = "",
    data: str = "",
    train_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ckpt = {
        "format": FORMAT,
        "version": 1,
        "kind": "detector",
        "preset": preset,
        "scale": {"width": scale.width, "depth": scale.depth, "max_channels": scale.max_channels},
        "reg_max": model.reg_max,
        "class_names": list(class_names),
        "img_size": int(img_size),
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "config": config or {},
        "metrics": metrics or {},
        "teacher": teacher,
        "data": data,
    }
    if train_state is not None:
        ckpt["train_state"] = train_state
    return ckpt


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate a checkpoint dict (weights_only; never unpickles code)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/foreign files
        raise ModelFileError(
            f"{path}: not a readable Understudy checkpoint ({type(e).__name__}: {str(e)[:120]}); "
            "train one with `understudy train` or `understudy distill`"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: not an Understudy checkpoint (missing format marker); "
            "checkpoints come from `understudy train` or `understudy distill`"
        )
    if ckpt.get("kind") != "detector":
        raise ModelFileError(f"{path}: checkpoint kind {ckpt.get('kind')!r} is not a detector")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint") -> Detector:
    """Rebuild the detector described by a checkpoint dict and load its weights."""
    scale = Scale(**ckpt["scale"]) if "scale" in ckpt else PRESETS[ckpt["preset"]]
    model = build_detector(scale, len(ckpt["class_names"]), reg_max=int(ckpt["reg_max"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ModelFileError(f"{source}: weights do not match the model ({str(e)[:200]})") from e
    return model.eval()


def load_detector(path: str | Path) -> tuple[Detector, dict[str, Any]]:
    """(model in eval mode, checkpoint dict without weights)."""
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt, str(path))
    info = {k: v for k, v in ckpt.items() if k not in ("model", "train_state")}
    return model, info


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of the model's weights, order-stable."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def spec_for(model: Detector, info: dict[str, Any], img_size: int, source: str = "") -> ModelSpec:
    """The runtime ModelSpec of a checkpoint's model at a given input size."""
    return ModelSpec(
        class_names=tuple(info["class_names"]),
        input_size=(img_size, img_size),
        strides=tuple(model.strides),
        reg_max=model.reg_max,
        output_layout="decoded_xyxy",
        preset=str(info.get("preset", "")),
        model_hash=weights_hash(model),
        source_checkpoint=source,
        teacher=str(info.get("teacher", "")),
    )


def load_for_inference(
    path: str | Path, img_size: int | None = None
) -> tuple[DecodedDetector, ModelSpec]:
    """Checkpoint -> (module mapping (B,3,H,W) [0,1] RGB to (boxes (B,A,4) xyxy network
    pixels, scores (B,A,C)), its ModelSpec). Used by the torch backend and export."""
    model, info = load_detector(path)
    size = int(img_size or info.get("img_size", 320))
    return DecodedDetector(model).eval(), spec_for(model, info, size, str(path))
