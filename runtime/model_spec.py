"""The contract between an exported model file and the runtime.

An Understudy ONNX file has one input and a documented output layout, and carries a
:class:`ModelSpec` in its ``metadata_props`` (keys prefixed ``understudy.``, values
JSON-encoded) and in a JSON sidecar next to it (``<model file>.json``).

Input ``images``: (B, 3, H, W) float32, channel order ``pixel_format`` (RGB), values
``(pixel - mean) / std`` with the spec's mean/std (default: 0 and 255, i.e. [0, 1]).

Output layouts:
- ``decoded_xyxy``: ``boxes`` (B, A, 4) float32 xyxy in network-input pixels
  (letterboxed image) and ``scores`` (B, A, C) float32 sigmoid probabilities.
- ``raw_dfl``: ``box_dist`` (B, A, 4 * reg_max) float32 logits of the DFL bins for the
  distances left, top, right, bottom (in units of the stride) and ``cls_logits``
  (B, A, C) float32 pre-sigmoid scores.

Anchors A are the cell centres of each stride's grid, level by level (stride 8 first),
row-major within a level: point ``((x + 0.5) * s, (y + 0.5) * s)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import ModelFileError
from runtime.files import write_json_atomic

PREFIX = "understudy."
FORMAT_VERSION = 1
LAYOUTS = ("decoded_xyxy", "raw_dfl")
INPUT_NAME = "images"
OUTPUT_NAMES = {"decoded_xyxy": ("boxes", "scores"), "raw_dfl": ("box_dist", "cls_logits")}


@dataclass(frozen=True)
class ModelSpec:
    """Everything the runtime needs to feed a model and read its outputs."""

    class_names: tuple[str, ...]
    input_size: tuple[int, int]  # (H, W) of the network input
    strides: tuple[int, ...] = (8, 16, 32)
    reg_max: int = 16
    output_layout: str = "decoded_xyxy"
    pixel_format: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)
    precision: str = "fp32"
    preset: str = ""
    model_hash: str = ""
    source_checkpoint: str = ""
    teacher: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.output_layout not in LAYOUTS:
            raise ModelFileError(
                f"model output_layout {self.output_layout!r} is not one of {LAYOUTS}; "
                "re-export the model with `understudy export`"
            )
        if not self.class_names:
            raise ModelFileError("model metadata has no class names; re-export the model")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_anchors(self) -> int:
        h, w = self.input_size
        return sum((h // s) * (w // s) for s in self.strides)

    @property
    def output_names(self) -> tuple[str, str]:
        return OUTPUT_NAMES[self.output_layout]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model metadata") -> ModelSpec:
        d = dict(d)
        d.pop("format_version", None)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        extra = dict(d.pop("extra", {}) or {})
        for k in unknown:
            extra[k] = d.pop(k)
        try:
            for k in ("class_names", "input_size", "strides", "mean", "std"):
                if k in d:
                    d[k] = tuple(d[k])
            return cls(**d, extra=extra)
        except TypeError as e:
            raise ModelFileError(
                f"{source}: incomplete Understudy metadata ({e}); re-export"
            ) from e

    def to_metadata_props(self) -> dict[str, str]:
        """``metadata_props`` entries: ``understudy.<key>`` -> JSON value."""
        return {PREFIX + k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_metadata_props(cls, props: dict[str, str], source: str = "model") -> ModelSpec:
        d: dict[str, Any] = {}
        for k, v in props.items():
            if k.startswith(PREFIX):
                try:
                    d[k[len(PREFIX) :]] = json.loads(v)
                except json.JSONDecodeError as e:
                    raise ModelFileError(f"{source}: metadata {k!r} is not JSON ({e})") from e
        if not d:
            raise ModelFileError(
                f"{source} has no Understudy metadata; export it with `understudy export` "
                "or write a sidecar JSON next to it"
            )
        return cls.from_dict(d, source=str(source))

    def write_sidecar(self, model_path: str | Path) -> Path:
        """Write ``<model_path>.json`` atomically; returns its path."""
        return write_json_atomic(sidecar_path(model_path), self.to_dict(), indent=2)

    @classmethod
    def read_sidecar(cls, model_path: str | Path) -> ModelSpec:
        path = sidecar_path(model_path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise ModelFileError(f"{path}: metadata sidecar not found") from e
        except json.JSONDecodeError as e:
            raise ModelFileError(f"{path}: not valid JSON ({e}); re-export the model") from e
        return cls.from_dict(d, source=str(path))


def sidecar_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def read_spec(path: Path, metadata: dict[str, str]) -> ModelSpec:
    """The spec of the model file ``path``: from its ``metadata`` (ONNX ``metadata_props``,
    as a dict) when it has ``understudy.*`` keys, else from the ``<model>.json`` sidecar."""
    if any(k.startswith(PREFIX) for k in metadata):
        return ModelSpec.from_metadata_props(metadata, source=str(path))
    if sidecar_path(path).is_file():
        return ModelSpec.read_sidecar(path)
    raise ModelFileError(
        f"{path} has no Understudy metadata and no sidecar {sidecar_path(path).name}; "
        "export it with `understudy export` or write the sidecar JSON next to it"
    )
