"""The native teacher: a checkpoint of this project's family (any size), frozen, eval
mode, no grad. Its outputs line up anchor by anchor with the student's (same strides,
same input), so it teaches through every channel: class scores, box distributions, neck
features, dense targets and pseudo-labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from distill.checkpoint import load_detector
from distill.teachers.base import TeacherOutput, Teaches, detect_images
from runtime.evaluate import EVAL_IOU_THRESHOLD, EVAL_MAX_DETECTIONS, EVAL_SCORE_THRESHOLD
from runtime.model_spec import ModelSpec
from runtime.types import Detections


class NativeTeacher:
    """A frozen checkpoint of the Understudy family."""

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
        self.img_size = int(info.get("img_size", 320))
        self.kind = "native"

    def teaches(self, img_size: int) -> Teaches:
        """Everything: the teacher runs on the student's own input, anchor by anchor."""
        return Teaches(anchors=True, dist=True, features=True)

    def describe(self) -> str:
        return f"{self.path} ({self.preset or 'native'} checkpoint)"

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

    def detect(
        self,
        images: Sequence[np.ndarray],
        pixel_format: str = "BGR",
        score_threshold: float = EVAL_SCORE_THRESHOLD,
        iou_threshold: float = EVAL_IOU_THRESHOLD,
        max_detections: int = EVAL_MAX_DETECTIONS,
    ) -> list[Detections]:
        """Detections on source images (uint8 (H, W, 3) in ``pixel_format``), letterboxed at
        the checkpoint's ``img_size``: boxes xyxy in each image's pixels, class ids of
        ``class_names``. The defaults are the runtime evaluator's (COCO mAP)."""
        s = self.img_size
        spec = ModelSpec(class_names=self.class_names, input_size=(s, s))
        device = next(self.model.parameters()).device

        def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            t = self(torch.from_numpy(np.ascontiguousarray(x)).to(device))
            return t.boxes.float().cpu().numpy(), t.scores.float().cpu().numpy()

        return detect_images(
            run, spec, images, pixel_format, score_threshold, iou_threshold, max_detections
        )
