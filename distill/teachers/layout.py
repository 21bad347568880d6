"""How to read an external ONNX detector: :class:`OutputLayout`, chosen from the graph
(:func:`resolve_layout`) or given in a YAML file (``kd.teacher_layout``), with the kind
overridable by ``kd.teacher_kind`` / ``--teacher-kind``.

Kinds (one adapter module each, ``distill/teachers/<kind>.py``):

- ``understudy``: this family's ``decoded_xyxy`` exports (metadata names the classes);
- ``yolo``: one output (B, 4 + C, N): cx, cy, w, h in input pixels, then C scores
  (the Ultralytics layout; its metadata ``names`` names the classes);
- ``pair``: two outputs, boxes (B, N, 4) and scores (B, N, C);
- ``detr``: two outputs, boxes (B, Q, 4) normalized cx, cy, w, h and class logits
  (B, Q, C) (sigmoid, as RT-DETR; softmax with a trailing no-object class, as DETR).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, replace

import numpy as np

from runtime.errors import ConfigError, ModelFileError

KINDS = ("understudy", "yolo", "pair", "detr")

# per kind: box_format, box_units, scores_activation (a layout's "" keys take these)
KIND_DEFAULTS = {
    "understudy": ("xyxy", "pixels", "none"),
    "yolo": ("cxcywh", "pixels", "none"),
    "pair": ("xyxy", "pixels", "none"),
    "detr": ("cxcywh", "normalized", "sigmoid"),
}


@dataclass(frozen=True)
class OutputLayout:
    """How to feed and read an external ONNX detector ("" = from the graph / the kind).

    kind: one of :data:`KINDS`; input: input tensor name; boxes / scores: output names
    (``yolo``: ``boxes`` names its one output); box_format: ``xyxy`` or ``cxcywh``;
    box_units: ``pixels`` (network input) or ``normalized`` ([0, 1] of the input's width
    and height); scores_activation: ``none`` (probabilities), ``sigmoid`` or ``softmax``;
    background_last: the last score column is a no-object class (dropped after softmax);
    class_names: the teacher's classes in output order (default: from its metadata);
    class_map: ``"teacher name=student name"`` entries for classes named differently;
    input_size: (H, W) when the graph's input size is symbolic; pixel_format, mean, std:
    the teacher's input is ``(pixel - mean) / std`` in that channel order.
    """

    kind: str = ""
    input: str = ""
    boxes: str = ""
    scores: str = ""
    box_format: str = ""
    box_units: str = ""
    scores_activation: str = ""
    background_last: bool = False
    class_names: tuple[str, ...] = ()
    class_map: tuple[str, ...] = ()
    input_size: tuple[int, ...] = ()
    pixel_format: str = "RGB"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (255.0, 255.0, 255.0)

    def __post_init__(self) -> None:
        checks = (
            ("kind", self.kind, ("", *KINDS)),
            ("box_format", self.box_format, ("", "xyxy", "cxcywh")),
            ("box_units", self.box_units, ("", "pixels", "normalized")),
            ("scores_activation", self.scores_activation, ("", "none", "sigmoid", "softmax")),
            ("pixel_format", self.pixel_format, ("RGB", "BGR")),
        )
        for key, value, allowed in checks:
            if value not in allowed:
                choices = ", ".join(a for a in allowed if a)
                raise ConfigError(f"teacher layout {key} {value!r}: use one of {choices}")
        if self.input_size and (len(self.input_size) != 2 or min(self.input_size) <= 0):
            raise ConfigError(f"teacher layout input_size {list(self.input_size)}: give [H, W]")
        for entry in self.class_map:
            if entry.count("=") != 1 or not all(p.strip() for p in entry.split("=")):
                raise ConfigError(
                    f"teacher layout class_map entry {entry!r}: write 'teacher name=student name'"
                )


def load_layout(path: str) -> OutputLayout:
    """Read an :class:`OutputLayout` YAML file (unknown keys rejected)."""
    from distill.config import load

    return load(OutputLayout, path)


class GraphInfo:
    """An ONNX Runtime session's inputs, outputs (name -> shape, ints or None) and metadata."""

    def __init__(self, session) -> None:
        def dims(shape) -> tuple[int | None, ...]:
            return tuple(d if isinstance(d, int) else None for d in shape)

        self.inputs = {i.name: dims(i.shape) for i in session.get_inputs()}
        self.outputs = {o.name: dims(o.shape) for o in session.get_outputs()}
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)


def metadata_class_names(meta: dict[str, str]) -> tuple[str, ...]:
    """Class names from a model's metadata: an Understudy spec, or an Ultralytics-style
    ``names`` entry (``{0: 'person', ...}``); () when neither is there."""
    from runtime.model_spec import ModelSpec

    if any(k.startswith("understudy.") for k in meta):
        return ModelSpec.from_metadata_props(meta).class_names
    raw = meta.get("names")
    if raw:
        try:
            names = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return ()
        if isinstance(names, dict):
            return tuple(str(names[k]) for k in sorted(names))
        if isinstance(names, (list, tuple)):
            return tuple(str(n) for n in names)
    return ()


def _kind_from_graph(g: GraphInfo, path: str) -> str:
    if any(k.startswith("understudy.") for k in g.metadata):
        return "understudy"
    outs = {n: s for n, s in g.outputs.items() if len(s) == 3}
    if len(g.outputs) == 1 and len(outs) == 1:
        return "yolo"
    names = " ".join(g.outputs).lower()
    if len(outs) == 2 and "logits" in names and "box" in names:
        return "detr"
    if len(outs) == 2 and any(s[-1] == 4 for s in outs.values()):
        return "pair"
    shapes = ", ".join(f"{n}{list(s)}" for n, s in g.outputs.items())
    raise ModelFileError(
        f"{path}: cannot tell the teacher's output layout from its outputs ({shapes}); "
        f"write a layout file (kd.teacher_layout) with kind: one of {', '.join(KINDS)}"
    )


def _pair_names(g: GraphInfo, layout: OutputLayout, path: str) -> tuple[str, str]:
    """(boxes, scores) output names: given, else the 3-D output whose last dim is 4."""
    if layout.boxes and layout.scores:
        return layout.boxes, layout.scores
    outs = [n for n, s in g.outputs.items() if len(s) == 3]
    boxes = layout.boxes or next((n for n in outs if g.outputs[n][-1] == 4), "")
    scores = layout.scores or next((n for n in outs if n != boxes), "")
    if not boxes or not scores:
        raise ModelFileError(
            f"{path}: cannot tell the boxes and scores outputs among {list(g.outputs)}; "
            "name them (boxes:, scores:) in the layout file"
        )
    return boxes, scores


def resolve_layout(
    g: GraphInfo, path: str, layout: OutputLayout | None = None, kind: str = ""
) -> OutputLayout:
    """Fill every "" key of ``layout`` from the graph, its metadata and the kind's
    defaults; ``kind`` (the ``--teacher-kind`` override) wins over both."""
    layout = layout or OutputLayout()
    if kind and kind not in KINDS:
        raise ConfigError(f"teacher kind {kind!r}: use one of {', '.join(KINDS)}")
    kind = kind or layout.kind or _kind_from_graph(g, path)
    if kind == "understudy":
        from runtime.model_spec import ModelSpec

        spec = ModelSpec.from_metadata_props(g.metadata, source=path)
        if spec.output_layout != "decoded_xyxy":
            raise ModelFileError(f"{path}: teacher must be exported with the decoded_xyxy layout")
        layout = replace(layout, mean=spec.mean, std=spec.std, pixel_format=spec.pixel_format)
    if len(g.inputs) != 1 and not layout.input:
        raise ModelFileError(f"{path}: the teacher has inputs {list(g.inputs)}; name one (input:)")
    fmt, units, act = KIND_DEFAULTS[kind]
    if kind == "yolo":
        boxes, scores = layout.boxes or next(iter(g.outputs)), ""
    else:
        boxes, scores = _pair_names(g, layout, path)
    names = layout.class_names or metadata_class_names(g.metadata)
    if not names:
        raise ModelFileError(
            f"{path}: the teacher's metadata does not name its classes; list them "
            "(class_names:, in output order) in a layout file (kd.teacher_layout)"
        )
    return replace(
        layout,
        kind=kind,
        input=layout.input or next(iter(g.inputs)),
        boxes=boxes,
        scores=scores,
        box_format=layout.box_format or fmt,
        box_units=layout.box_units or units,
        scores_activation=layout.scores_activation or act,
        class_names=tuple(names),
    )


def input_size(g: GraphInfo, layout: OutputLayout, path: str, fallback: int) -> tuple[int, int]:
    """The teacher's (H, W): the layout's, else the graph's, else ``fallback`` square."""
    if layout.input_size:
        return int(layout.input_size[0]), int(layout.input_size[1])
    shape = g.inputs[layout.input]
    if len(shape) != 4:
        raise ModelFileError(
            f"{path}: teacher input {layout.input}{list(shape)} is not (B, 3, H, W)"
        )
    if shape[2] is not None and shape[3] is not None:
        return int(shape[2]), int(shape[3])
    return fallback, fallback


def to_xyxy_pixels(boxes: np.ndarray, layout: OutputLayout, hw: tuple[int, int]) -> np.ndarray:
    """(..., 4) boxes in the layout's format and units -> xyxy network-input pixels."""
    b = boxes.astype(np.float32, copy=True)
    if layout.box_units == "normalized":
        b *= np.array([hw[1], hw[0], hw[1], hw[0]], np.float32)
    if layout.box_format == "cxcywh":
        half = b[..., 2:] / 2
        b = np.concatenate([b[..., :2] - half, b[..., :2] + half], -1)
    return b


def activate(scores: np.ndarray, layout: OutputLayout) -> np.ndarray:
    """(..., C') raw scores -> (..., C) probabilities (no-object column dropped)."""
    s = scores.astype(np.float32, copy=False)
    if layout.scores_activation == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-np.clip(s, -60, 60)))
    elif layout.scores_activation == "softmax":
        e = np.exp(s - s.max(-1, keepdims=True))
        s = e / e.sum(-1, keepdims=True)
    return s[..., :-1] if layout.background_last else s
