"""Teachers behind one small interface.

- :class:`NativeTeacher`: a checkpoint of this project's family (any size), frozen, eval
  mode, no grad. Its outputs line up anchor by anchor with the student's (same strides,
  same input), so it teaches through every channel: class scores, box distributions,
  neck features, and pseudo-labels.
- :class:`OnnxTeacher`: any ONNX detector whose outputs are boxes + class scores, described
  by a small :class:`OutputLayout`. It teaches through pseudo-labels and soft class scores
  only (soft scores position by position when its anchors match the student's, which holds
  for an Understudy export at the student's input size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from distill.checkpoint import load_detector
from runtime.errors import ConfigError, ModelFileError


class TeacherOutput(NamedTuple):
    """Teacher predictions on a batch of network inputs (B, 3, S, S).

    boxes: (B, A_t, 4) xyxy network-input pixels; scores: (B, A_t, C) probabilities;
    cls_logits: (B, A, C) or None; dist: (B, A, 4, R) or None (native teachers only);
    feats: {"p3", "p4", "p5"} neck features or None.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    cls_logits: torch.Tensor | None
    dist: torch.Tensor | None
    feats: dict[str, torch.Tensor] | None


class NativeTeacher:
    """A frozen checkpoint of the Understudy family."""

    dense = True  # anchors, box distributions and features line up with the student's

    def __init__(
        self, path: str | Path, device: torch.device | str = "cpu", bf16: bool = False
    ) -> None:
        self.path = str(path)
        model, info = load_detector(path)
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.class_names = tuple(info["class_names"])
        self.preset = str(info.get("preset", ""))
        self.bf16 = bf16
        self.feature_channels = dict(self.model.neck.out_channels)

    # no_grad rather than inference_mode: inference tensors cannot be saved for the
    # student's backward pass, and the KD losses combine teacher outputs with the student's.
    @torch.no_grad()
    def __call__(self, images: torch.Tensor, need_features: bool = False) -> TeacherOutput:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if need_features:
                out, feats = self.model(images, return_features=True)
                feats = {k: v.float() for k, v in feats.items()}
            else:
                out, feats = self.model(images), None
        out = out._replace(cls=out.cls.float(), dist=out.dist.float())
        boxes, scores = self.model.decode(out)
        return TeacherOutput(boxes, scores, out.cls, out.dist, feats)


@dataclass(frozen=True)
class OutputLayout:
    """How to read an external ONNX detector.

    input: input tensor name; boxes / scores: output names; box_format: "xyxy" or
    "cxcywh" in network-input pixels; scores_activation: "none" (already probabilities),
    "sigmoid" or "softmax"; class_names: the teacher's classes in output order (must
    contain the student's classes; others are ignored). Input is RGB scaled to [0, 1].
    """

    input: str = "images"
    boxes: str = "boxes"
    scores: str = "scores"
    box_format: str = "xyxy"
    scores_activation: str = "none"
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.box_format not in ("xyxy", "cxcywh"):
            raise ConfigError(f"teacher layout box_format {self.box_format!r}: use xyxy or cxcywh")
        if self.scores_activation not in ("none", "sigmoid", "softmax"):
            raise ConfigError(
                f"teacher layout scores_activation {self.scores_activation!r}: "
                "use none, sigmoid or softmax"
            )


class OnnxTeacher:
    """An external detector in ONNX, run with ONNX Runtime on the CPU (or CUDA EP)."""

    def __init__(
        self,
        path: str | Path,
        class_names: tuple[str, ...],
        layout: OutputLayout | None = None,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = str(path)
        if layout is None:
            layout = layout_from_metadata(path)
        self.layout = layout
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelFileError(
                f"{path}: ONNX Runtime cannot load the teacher ({str(e)[:160]})"
            ) from e
        shape = self.session.get_inputs()[0].shape
        self.input_hw = (shape[2], shape[3]) if all(isinstance(d, int) for d in shape[2:]) else None
        self.batch_fixed = shape[0] if isinstance(shape[0], int) else None
        teacher_names = layout.class_names or tuple(class_names)
        missing = [n for n in class_names if n not in teacher_names]
        if missing:
            raise ConfigError(
                f"{path}: the teacher has no classes {missing}; map them in its layout file"
            )
        self.class_index = np.array([teacher_names.index(n) for n in class_names])
        self.class_names = tuple(class_names)
        self.dense = False  # set by the distiller once anchor counts are known
        self.feature_channels: dict[str, int] = {}

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.session.run([self.layout.boxes, self.layout.scores], {self.layout.input: x})
        return out[0], out[1]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, need_features: bool = False) -> TeacherOutput:
        x = images.float()
        scale = 1.0
        if self.input_hw is not None and tuple(x.shape[2:]) != tuple(self.input_hw):
            scale = self.input_hw[0] / x.shape[2]
            x = torch.nn.functional.interpolate(
                x, size=self.input_hw, mode="bilinear", align_corners=False
            )
        arr = x.cpu().numpy()
        if self.batch_fixed:
            parts = [
                self._run(arr[i : i + self.batch_fixed])
                for i in range(0, len(arr), self.batch_fixed)
            ]
            boxes, scores = (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
            )
        else:
            boxes, scores = self._run(arr)
        boxes = torch.from_numpy(np.ascontiguousarray(boxes)).float()
        scores = torch.from_numpy(np.ascontiguousarray(scores)).float()
        if self.layout.box_format == "cxcywh":
            c, wh = boxes[..., :2], boxes[..., 2:] / 2
            boxes = torch.cat([c - wh, c + wh], -1)
        boxes = boxes / scale
        if self.layout.scores_activation == "sigmoid":
            scores = scores.sigmoid()
        elif self.layout.scores_activation == "softmax":
            scores = scores.softmax(-1)
        scores = scores[..., torch.from_numpy(self.class_index)]
        logits = torch.logit(scores.clamp(1e-6, 1 - 1e-6)) if self.dense else None
        device = images.device
        return TeacherOutput(
            boxes.to(device),
            scores.to(device),
            None if logits is None else logits.to(device),
            None,
            None,
        )


def layout_from_metadata(path: str | Path) -> OutputLayout:
    """The layout of an Understudy ONNX export (decoded_xyxy) from its metadata."""
    from runtime.engine.onnx_io import read_onnx_spec

    spec = read_onnx_spec(path)
    if spec.output_layout != "decoded_xyxy":
        raise ModelFileError(f"{path}: teacher must be exported with the decoded_xyxy layout")
    return OutputLayout(class_names=spec.class_names)


def load_layout(path: str | Path) -> OutputLayout:
    """Read an :class:`OutputLayout` YAML file (unknown keys rejected)."""
    from distill.config import load

    return load(OutputLayout, path)


def open_teacher(
    path: str | Path,
    class_names: tuple[str, ...],
    device: torch.device,
    bf16: bool = False,
    layout_file: str | None = None,
) -> NativeTeacher | OnnxTeacher:
    """Open a teacher by file type: ``.pt`` native checkpoint, ``.onnx`` external teacher."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: teacher not found")
    match p.suffix.lower():
        case ".pt":
            teacher = NativeTeacher(p, device, bf16)
            if teacher.class_names != tuple(class_names):
                raise ConfigError(
                    f"{p}: teacher classes {list(teacher.class_names)} differ from the data's "
                    f"{list(class_names)}; train the teacher on the same classes"
                )
            return teacher
        case ".onnx":
            layout = load_layout(layout_file) if layout_file else None
            return OnnxTeacher(p, tuple(class_names), layout)
    raise ModelFileError(f"{p}: a teacher is a checkpoint (.pt) or an ONNX detector (.onnx)")
