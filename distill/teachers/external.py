"""An external ONNX teacher of any family (:class:`OnnxTeacher`).

The student's batch (B, 3, S, S) is letterboxed into the teacher's own input (H, W) (its
size and aspect: scale ``min(H, W) / S``, centred, padded with the runtime's pad value),
normalized as the teacher expects, and run with ONNX Runtime (CUDA when its provider is
present and the training device is CUDA, else the CPU). The layout's adapter
(``distill/teachers/{pair,yolo,detr}.py``) turns the outputs into boxes and scores; the
boxes go back to the student's pixels through the inverse letterbox and the scores onto
the student's classes by name (:class:`distill.teachers.classes.ClassMap`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from distill.teachers.base import TeacherOutput, Teaches, detect_images
from distill.teachers.classes import ClassMap
from distill.teachers.detr import decode as decode_detr
from distill.teachers.layout import GraphInfo, OutputLayout, input_size, resolve_layout
from distill.teachers.pair import decode as decode_pair
from distill.teachers.yolo import decode as decode_yolo
from runtime.errors import ModelFileError
from runtime.evaluate import EVAL_IOU_THRESHOLD, EVAL_MAX_DETECTIONS, EVAL_SCORE_THRESHOLD
from runtime.model_spec import ModelSpec
from runtime.preprocess import PAD_VALUE, Letterbox
from runtime.types import Detections

log = logging.getLogger(__name__)

Decode = Callable[[dict, OutputLayout, tuple[int, int]], tuple[np.ndarray, np.ndarray]]
ADAPTERS: dict[str, Decode] = {
    "understudy": decode_pair,
    "pair": decode_pair,
    "yolo": decode_yolo,
    "detr": decode_detr,
}


def providers_for(device: torch.device, available: Sequence[str]) -> list:
    """ONNX Runtime providers: CUDA (on the training device's GPU) when torch trains on
    CUDA and the CUDA provider is installed, always with the CPU as the fallback."""
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxTeacher:
    """An external detector in ONNX: boxes and scores of any layout in :data:`ADAPTERS`.

    class_names: the student's (data's) classes; layout: how to read the graph ("" keys
    are found from it); kind: overrides the layout's kind; img_size: the student's input
    (the teacher's input size when its graph leaves it symbolic).
    """

    def __init__(
        self,
        path: str | Path,
        class_names: tuple[str, ...],
        layout: OutputLayout | None = None,
        *,
        kind: str = "",
        device: torch.device | str = "cpu",
        img_size: int = 640,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = str(path)
        self.device = torch.device(device)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                self.path, opts, providers=providers_for(self.device, ort.get_available_providers())
            )
        except Exception as e:
            raise ModelFileError(
                f"{path}: ONNX Runtime cannot load the teacher ({str(e)[:160]})"
            ) from e
        self.providers = tuple(self.session.get_providers())
        graph = GraphInfo(self.session)
        self.layout = resolve_layout(graph, self.path, layout, kind)
        self.kind = self.layout.kind
        self.input_hw = input_size(graph, self.layout, self.path, img_size)
        b = graph.inputs[self.layout.input][0]
        self.batch_fixed = b if b is not None else None
        self.classes = ClassMap(
            self.layout.class_names, tuple(class_names), self.layout.class_map, self.path
        )
        self.class_names = tuple(class_names)
        self._decode = ADAPTERS[self.kind]
        self.feature_channels: dict[str, int] = {}
        self.spec = ModelSpec(
            class_names=self.class_names,
            input_size=self.input_hw,
            pixel_format=self.layout.pixel_format,
            mean=tuple(self.layout.mean),
            std=tuple(self.layout.std),
        )

    def teaches(self, img_size: int) -> Teaches:
        """Anchor by anchor only for this family's export at the student's input size
        with every class; never box distributions or features (not in the graph)."""
        aligned = (
            self.kind == "understudy"
            and self.input_hw == (img_size, img_size)
            and self.classes.complete
        )
        return Teaches(anchors=aligned, dist=False, features=False)

    def describe(self) -> str:
        h, w = self.input_hw
        where = "CUDA" if self.providers[0].startswith("CUDA") else "CPU"
        return f"{self.path} ({self.kind} layout, input {h}x{w}, ONNX Runtime on {where})"

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3, H, W) float32 teacher input -> boxes (B, N, 4) xyxy teacher-input pixels,
        scores (B, N, S) probabilities over the student's classes."""
        step = self.batch_fixed or len(x)
        names = [o.name for o in self.session.get_outputs()]
        parts = []
        for i in range(0, len(x), step):
            chunk = np.ascontiguousarray(x[i : i + step], np.float32)
            n = len(chunk)
            if n < step:  # a graph of fixed batch: pad the last chunk, keep its n results
                chunk = np.concatenate([chunk, np.zeros((step - n, *chunk.shape[1:]), np.float32)])
            raw = dict(zip(names, self.session.run(names, {self.layout.input: chunk})))
            boxes, scores = self._decode(raw, self.layout, self.input_hw)
            parts.append((boxes[:n], scores[:n]))
        boxes = np.concatenate([p[0] for p in parts])
        return boxes, self.classes.scores(np.concatenate([p[1] for p in parts]))

    def letterbox(self, images: torch.Tensor) -> tuple[torch.Tensor, Letterbox]:
        """Student inputs (B, 3, S, S) RGB in [0, 1] -> the teacher's normalized input
        (B, 3, H, W) (aspect kept, centred, padded) and the transform between the two."""
        s = images.shape[-1]
        lb = Letterbox.fit((images.shape[-2], s), self.input_hw)
        x = images.float()
        if lb.resized != tuple(images.shape[-2:]):
            x = F.interpolate(x, size=lb.resized, mode="bilinear", align_corners=False)
        if lb.resized != self.input_hw:
            h, w = lb.resized
            canvas = x.new_full((x.shape[0], 3, *self.input_hw), PAD_VALUE / 255.0)
            canvas[:, :, lb.pad_y : lb.pad_y + h, lb.pad_x : lb.pad_x + w] = x
            x = canvas
        if self.layout.pixel_format == "BGR":
            x = x.flip(1)
        mean = x.new_tensor(self.layout.mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.layout.std).view(1, 3, 1, 1)
        return (x * 255.0 - mean) / std, lb

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, need_features: bool = False) -> TeacherOutput:
        """Outputs on a student batch (B, 3, S, S): boxes in the student's pixels, scores
        over the student's classes (see :class:`TeacherOutput`)."""
        x, lb = self.letterbox(images)
        boxes, scores = self.run(x.cpu().numpy())
        pad = np.array([lb.pad_x, lb.pad_y] * 2, np.float32)
        boxes = (boxes - pad) / np.float32(lb.scale)
        t_boxes = torch.from_numpy(boxes).to(images.device)
        t_scores = torch.from_numpy(np.ascontiguousarray(scores)).to(images.device)
        logits = None
        if self.teaches(images.shape[-1]).anchors:
            logits = torch.logit(t_scores.clamp(1e-6, 1 - 1e-6))
        return TeacherOutput(t_boxes, t_scores, logits, None, None)

    def detect(
        self,
        images: Sequence[np.ndarray],
        pixel_format: str = "BGR",
        score_threshold: float = EVAL_SCORE_THRESHOLD,
        iou_threshold: float = EVAL_IOU_THRESHOLD,
        max_detections: int = EVAL_MAX_DETECTIONS,
    ) -> list[Detections]:
        """Detections on source images (uint8 (H, W, 3) in ``pixel_format``), letterboxed
        at the teacher's own input: boxes xyxy in each image's pixels, class ids of the
        student's ``class_names`` (the teacher's other classes left out). The defaults are
        the runtime evaluator's (COCO mAP)."""
        args = (pixel_format, score_threshold, iou_threshold, max_detections)
        return detect_images(self.run, self.spec, images, *args)
