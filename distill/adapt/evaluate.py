"""Scoring a student on a site without labels: agreement with the teacher on held-out
site frames.

The teacher's detections at or above ``score_threshold`` are the reference (as for the
shadow teacher in the field). A student is scored two ways against them:

- **agreement** at the deployed operating point: the student's detections at or above
  ``score_threshold`` are matched to the reference by :func:`runtime.shadow.match_detections`
  (same class, IoU >= ``iou_threshold``, greedy by score): per-class and overall
  precision, recall and F1 (in points, 0-100);
- **mAP against the teacher's pseudo-labels**: the reference boxes become the ground truth
  of a COCO split and the student's detections (COCO protocol threshold) are scored by
  :func:`runtime.evaluate.coco_evaluate` (mAP50-95 and mAP50, points).

Frames come as a folder read by :class:`distill.data.torch_dataset.UnlabelledFrames`
(letterboxed like training); detections are in original-image pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.evaluate import model_outputs, predict_batches
from runtime.data.records import DatasetSplit, ImageRecord
from runtime.evaluate import coco_evaluate
from runtime.shadow import Agreement, match_detections
from runtime.types import Detections


@dataclass(frozen=True)
class SiteScore:
    """A student's agreement with the teacher on site frames (all numbers in points)."""

    frames: int
    precision: float
    recall: float
    f1: float
    map50_95: float  # against the teacher's pseudo-labels
    map50: float
    per_class: dict[str, dict[str, float]]  # name -> precision, recall, f1, tp, fp, fn

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metric(self, name: str) -> float:
        """``f1`` or ``map50_95`` (the gate's site metric)."""
        return float(getattr(self, name))


def frame_batches(folder: str | Path, img_size: int, batch_size: int = 16):
    """(dataset, a function giving fresh (images (B, 3, S, S), metas) batches) of a
    folder of site frames."""
    from torch.utils.data import DataLoader

    from distill.data.torch_dataset import UnlabelledFrames, collate_frames

    ds = UnlabelledFrames(folder, img_size)

    def batches():
        return iter(DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate_frames))

    return ds, batches


def teacher_reference(
    teacher, folder: str | Path, img_size: int, names: tuple[str, ...], score_threshold: float
) -> dict[int, Detections]:
    """The teacher's detections (score >= ``score_threshold``) on each frame of ``folder``,
    by 1-based frame position. ``teacher``: a :func:`distill.teachers.open_teacher` teacher."""

    def outputs(images):
        out = teacher(images)
        return out.boxes, out.scores

    _, batches = frame_batches(folder, img_size)
    return predict_batches(outputs, batches(), img_size, names, score_threshold=score_threshold)[0]


def _per_class(total: Agreement, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    p, r = total.precision(), total.recall()
    out = {}
    for c, name in enumerate(names):
        tp, fp, fn = int(total.tp[c]), int(total.fp[c]), int(total.fn[c])
        f1 = 100.0 if tp + fp + fn == 0 else 200.0 * tp / (2 * tp + fp + fn)
        out[name] = {
            "precision": None if np.isnan(p[c]) else round(100 * float(p[c]), 2),
            "recall": None if np.isnan(r[c]) else round(100 * float(r[c]), 2),
            "f1": round(f1, 2),
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }
    return out


def score_against(
    predictions: dict[int, Detections],
    reference: dict[int, Detections],
    paths: list[Path],
    sizes: list[tuple[int, int]],
    names: tuple[str, ...],
    score_threshold: float,
    iou_threshold: float = 0.5,
) -> SiteScore:
    """Score ``predictions`` (image id -> Detections at a low threshold, e.g. 0.001)
    against the teacher ``reference`` (image id -> Detections) on frames ``paths`` with
    (height, width) ``sizes``; image ids are 1-based positions in ``paths``."""
    total = Agreement.zeros(len(names))
    records = []
    for i, (path, (h, w)) in enumerate(zip(paths, sizes), 1):
        pred = predictions.get(i, Detections.empty())
        ref = reference.get(i, Detections.empty())
        keep = pred.scores >= score_threshold
        served = Detections(pred.boxes[keep], pred.scores[keep], pred.class_ids[keep])
        total = total + match_detections(served, ref, len(names), iou_threshold=iou_threshold)
        records.append(
            ImageRecord(
                path=path,
                boxes=ref.boxes.astype(np.float32).reshape(-1, 4),
                classes=ref.class_ids.astype(np.int64),
                image_id=i,
                width=w,
                height=h,
            )
        )
    split = DatasetSplit(records=records, class_names=names, source="teacher pseudo-labels")
    m, m50, _ = coco_evaluate(split, predictions)
    precision, recall = total.overall()
    return SiteScore(
        frames=len(paths),
        precision=round(100 * precision, 2) if not np.isnan(precision) else 0.0,
        recall=round(100 * recall, 2) if not np.isnan(recall) else 0.0,
        f1=round(100 * total.f1(), 2),
        map50_95=m,
        map50=m50,
        per_class=_per_class(total, names),
    )


def site_score(
    model,
    folder: str | Path,
    reference: dict[int, Detections],
    img_size: int,
    names: tuple[str, ...],
    score_threshold: float,
    iou_threshold: float = 0.5,
) -> SiteScore:
    """Score a torch Detector on the frames of ``folder`` against the teacher's
    ``reference`` (:func:`teacher_reference` of the same folder)."""
    ds, batches = frame_batches(folder, img_size)
    predictions, _ = predict_batches(model_outputs(model), batches(), img_size, names)
    sizes = [_image_hw(p) for p in ds.paths]
    return score_against(
        predictions, reference, list(ds.paths), sizes, names, score_threshold, iou_threshold
    )


def _image_hw(path: Path) -> tuple[int, int]:
    from runtime.data.records import read_image_size

    w, h = read_image_size(path)
    return h, w
