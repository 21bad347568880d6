"""Network outputs -> Detections: DFL decode, score threshold, top-k, class-aware NMS, un-letterbox.

Per image the work is proportional to the number of candidates above the score
threshold: the only pass over all anchors x classes is one threshold comparison (done
for the whole batch at once); the arg-max class, DFL decoding and the sigmoid run on
candidates only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from runtime.errors import ConfigError, ModelFileError
from runtime.model_spec import ModelSpec
from runtime.preprocess import Letterbox
from runtime.types import Detections


def make_anchors(input_size: tuple[int, int], strides: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Anchor points (A, 2) float32 (x, y network pixels) and their strides (A,) float32.

    Cell centres ``((x + 0.5) * s, (y + 0.5) * s)``, level by level, row-major per level.
    """
    h, w = input_size
    points, stride_list = [], []
    for s in strides:
        ny, nx = h // s, w // s
        ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        points.append(np.stack([(xs.ravel() + 0.5) * s, (ys.ravel() + 0.5) * s], axis=1))
        stride_list.append(np.full(ny * nx, s))
    return (
        np.concatenate(points).astype(np.float32),
        np.concatenate(stride_list).astype(np.float32),
    )


def dfl_decode(box_dist: np.ndarray, points: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """Decode DFL bin logits to boxes.

    box_dist: (K, 4 * reg_max) logits for the distances (left, top, right, bottom), in
    units of the stride; points: (K, 2) anchor centres; strides: (K,).
    Returns (K, 4) float32 xyxy network-input pixels: softmax over the bins, expected
    bin index, ``anchor -/+ distance * stride``.
    """
    k = box_dist.shape[0]
    logits = box_dist.reshape(k, 4, -1).astype(np.float32, copy=False)
    e = np.exp(logits - logits.max(axis=2, keepdims=True))
    dist = (e @ np.arange(e.shape[2], dtype=np.float32)) / e.sum(axis=2)  # (K, 4)
    dist *= strides[:, None]
    return np.concatenate([points - dist[:, :2], points + dist[:, 2:]], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), both xyxy in the
    same pixels: (N, M) float64; 0 where the union is empty (a box with x2 < x1 or y2 < y1
    has area 0). The one IoU of the project's numpy code (NMS, shadow agreement, export
    parity)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    a_, b_ = a[:, None, :], b[None, :, :]  # (N, 1, 4), (1, M, 4)
    w = np.minimum(a_[..., 2], b_[..., 2]) - np.maximum(a_[..., 0], b_[..., 0])
    h = np.minimum(a_[..., 3], b_[..., 3]) - np.maximum(a_[..., 1], b_[..., 1])
    inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)  # (N, M)
    area_a = np.maximum(a[:, 2] - a[:, 0], 0.0) * np.maximum(a[:, 3] - a[:, 1], 0.0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms_numpy(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_output: int
) -> np.ndarray:
    """Greedy NMS. boxes (N, 4) xyxy, scores (N,). Returns kept indices, best score first.

    A box is suppressed when its IoU with a kept, higher-scoring box is > iou_threshold.
    """
    order = np.argsort(-scores, kind="stable")
    boxes = boxes.astype(np.float64, copy=False)
    keep: list[int] = []
    while order.size and len(keep) < max_output:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def nms_opencv(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_output: int
) -> np.ndarray:
    """Same contract as :func:`nms_numpy`, computed by ``cv2.dnn.NMSBoxes``."""
    b = boxes.astype(np.float64)
    b[:, 2:] -= b[:, :2]  # xyxy -> xywh
    # OpenCV drops scores <= 0 (its threshold must be >= 0; callers pass scores > 0), and
    # its top_k caps the boxes entering NMS, not the kept ones: slice afterwards.
    idx = cv2.dnn.NMSBoxes(b, scores.astype(np.float32), 0.0, float(iou_threshold))
    return np.asarray(idx, dtype=np.int64).reshape(-1)[:max_output]


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_output: int,
    class_agnostic: bool = False,
    use_opencv: bool = True,
) -> np.ndarray:
    """Class-aware NMS by the offset trick: each class's boxes are shifted to a disjoint
    region (offset ``class_id * (extent + 1)``) so one NMS never compares two classes.

    boxes (N, 4) xyxy, scores (N,), class_ids (N,) int. Returns kept indices, best first.
    """
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    b = boxes.astype(np.float64)
    if not class_agnostic:
        lo = b.min()
        extent = b.max() - lo + 1.0
        b = b - lo + class_ids.astype(np.float64)[:, None] * extent
    nms = nms_opencv if use_opencv else nms_numpy
    return nms(b, scores, iou_threshold, max_output)


class Postprocessor:
    """Decodes a batch of model outputs into :class:`Detections` in original pixels.

    Scores are per-class sigmoid probabilities; each anchor keeps its best class
    (single-label). An anchor is a candidate when its score is > ``score_threshold``;
    at most ``pre_nms_topk`` candidates (highest scores) enter NMS and at most
    ``max_detections`` survive it.
    """

    def __init__(
        self,
        spec: ModelSpec,
        score_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        max_detections: int = 100,
        pre_nms_topk: int = 1000,
        class_agnostic: bool = False,
        use_opencv_nms: bool = True,
    ):
        for name, v in (("score_threshold", score_threshold), ("iou_threshold", iou_threshold)):
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {v}")
        for name, n in (("max_detections", max_detections), ("pre_nms_topk", pre_nms_topk)):
            if n < 1:
                raise ConfigError(f"{name} must be >= 1, got {n}")
        self.spec = spec
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.pre_nms_topk = int(pre_nms_topk)
        self.class_agnostic = class_agnostic
        self.use_opencv_nms = use_opencv_nms
        self.raw = spec.output_layout == "raw_dfl"
        if self.raw:
            self._points, self._strides = make_anchors(spec.input_size, spec.strides)
            t = self.score_threshold  # compare logits, so the sigmoid runs on candidates only
            self._threshold = -math.inf if t == 0 else math.inf if t == 1 else math.log(t / (1 - t))
        else:
            self._threshold = self.score_threshold

    def _check(
        self, outputs: Mapping[str, np.ndarray], batch: int
    ) -> tuple[np.ndarray, np.ndarray]:
        box_name, score_name = self.spec.output_names
        missing = [n for n in (box_name, score_name) if n not in outputs]
        if missing:
            raise ModelFileError(
                f"model outputs {sorted(outputs)} lack {missing} required by the "
                f"{self.spec.output_layout!r} layout; re-export the model"
            )
        box, score = outputs[box_name], outputs[score_name]
        c = self.spec.num_classes
        box_w = 4 * self.spec.reg_max if self.raw else 4
        a = score.shape[1] if score.ndim == 3 else -1
        if self.raw and a != self.spec.num_anchors:
            a = -1
        if box.shape != (batch, a, box_w) or score.shape != (batch, a, c):
            raise ModelFileError(
                f"model outputs {box_name}{tuple(box.shape)} / {score_name}{tuple(score.shape)} "
                f"do not match the spec: expected ({batch}, A, {box_w}) / ({batch}, A, {c})"
                + (f" with A = {self.spec.num_anchors}" if self.raw else "")
                + "; the sidecar/metadata does not describe this model"
            )
        return box, score

    def __call__(
        self, outputs: Mapping[str, np.ndarray], letterboxes: Sequence[Letterbox]
    ) -> list[Detections]:
        """outputs: name -> (B, A, ...) arrays of one backend call; letterboxes: B transforms.

        Returns B :class:`Detections` (boxes xyxy in original-image pixels, clipped).
        """
        box, score = self._check(outputs, len(letterboxes))
        hit = (score > self._threshold).any(axis=2)  # (B, A): the one pass over all scores
        return [self._one(box[i], score[i], hit[i], lb) for i, lb in enumerate(letterboxes)]

    def _one(
        self, box: np.ndarray, score: np.ndarray, hit: np.ndarray, lb: Letterbox
    ) -> Detections:
        cand = np.flatnonzero(hit)
        if cand.size == 0:
            return Detections.empty()
        rows = score[cand]
        cls = rows.argmax(axis=1).astype(np.int32)
        conf = rows[np.arange(cand.size), cls].astype(np.float32)
        if cand.size > self.pre_nms_topk:
            top = np.sort(np.argpartition(-conf, self.pre_nms_topk - 1)[: self.pre_nms_topk])
            cand, cls, conf = cand[top], cls[top], conf[top]
        if self.raw:
            conf = 1.0 / (1.0 + np.exp(-conf))
            boxes = dfl_decode(box[cand], self._points[cand], self._strides[cand])
        else:
            boxes = box[cand].astype(np.float32)
        # Clip to the image's region of the letterboxed input, so NMS sees final boxes.
        h, w = lb.src
        x0, y0, x1, y1 = lb.to_network(np.array([[0.0, 0.0, w, h]]))[0]
        np.clip(
            boxes, np.array([x0, y0] * 2, np.float32), np.array([x1, y1] * 2, np.float32), out=boxes
        )
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not ok.all():
            boxes, conf, cls = boxes[ok], conf[ok], cls[ok]
        keep = batched_nms(
            boxes,
            conf,
            cls,
            self.iou_threshold,
            self.max_detections,
            self.class_agnostic,
            self.use_opencv_nms,
        )
        out = lb.to_original(boxes[keep], clip=True).astype(np.float32)
        return Detections(out, conf[keep], cls[keep])
