"""Teachers behind one small interface.

- :class:`NativeTeacher` (``native.py``): a checkpoint of this project's family; teaches
  through every channel.
- :class:`OnnxTeacher` (``external.py``): any ONNX detector, read by the adapter of its
  output layout (``understudy``, ``yolo``, ``pair``, ``detr``: ``layout.py``), fed at its
  own input size and aspect, its classes mapped by name (``classes.py``).

Every teacher has ``__call__(images (B, 3, S, S)) -> TeacherOutput`` (a training batch,
boxes in the student's pixels), ``teaches(S) -> Teaches`` (which KD terms it can give),
``detect(images) -> list[Detections]`` (source images in, boxes xyxy in source pixels and
the student's class ids out: for evaluating a teacher), ``describe()`` and
``class_names``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distill.teachers.base import TeacherOutput, Teaches
from distill.teachers.external import OnnxTeacher
from distill.teachers.layout import OutputLayout, load_layout
from distill.teachers.native import NativeTeacher
from runtime.errors import ConfigError, ModelFileError

__all__ = [
    "NativeTeacher",
    "OnnxTeacher",
    "OutputLayout",
    "TeacherOutput",
    "Teaches",
    "load_layout",
    "open_teacher",
]


def open_teacher(
    path: str | Path,
    class_names: tuple[str, ...],
    device: torch.device | str = "cpu",
    bf16: bool = False,
    layout_file: str | None = None,
    kind: str = "",
    img_size: int = 640,
) -> NativeTeacher | OnnxTeacher:
    """Open a teacher by file type: ``.pt`` native checkpoint, ``.onnx`` external teacher
    (``layout_file``: an :class:`OutputLayout` YAML; ``kind``: overrides its layout kind;
    ``img_size``: the student's input, used when the graph's input size is symbolic)."""
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
            return OnnxTeacher(
                p, tuple(class_names), layout, kind=kind, device=device, img_size=img_size
            )
    raise ModelFileError(f"{p}: a teacher is a checkpoint (.pt) or an ONNX detector (.onnx)")
