"""COCO evaluation with pycocotools (the reference implementation), without torch.

Predictions of any model kind become :class:`runtime.types.Detections` per image in
original-image pixels, and :func:`coco_evaluate` scores them against the split's ground
truth. :func:`evaluate_runtime` runs an exported model (.onnx, .engine) through the runtime
pipeline, the same code as serving; ``distill.evaluate`` does the same for a torch Detector.

pycocotools (and pillow, which reads image sizes) are the ``eval`` extra: on a runtime-only
install, :func:`require_eval_packages` says in one line what to install.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runtime.data.dataset import to_coco_dict
from runtime.data.records import DatasetSplit
from runtime.errors import MissingPackage
from runtime.types import Detections

EVAL_SCORE_THRESHOLD = 0.001  # COCO protocol: keep low-score detections for the PR curve
EVAL_IOU_THRESHOLD = 0.6
EVAL_MAX_DETECTIONS = 100
EVAL_PACKAGES = {"pycocotools": "pycocotools", "PIL": "pillow"}  # import name -> pip name


@dataclass(frozen=True)
class EvalResult:
    """mAP values in points (0-100), per-class AP50-95 in points, images/s of the model."""

    map50_95: float
    map50: float
    per_class_ap: dict[str, float]
    images: int
    images_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        lines = [
            f"mAP50-95 {self.map50_95:.2f}   mAP50 {self.map50:.2f}   "
            f"({self.images} images, {self.images_per_s:.1f} images/s)"
        ]
        lines += [f"  {name:<16} AP50-95 {ap:6.2f}" for name, ap in self.per_class_ap.items()]
        return "\n".join(lines)


def require_eval_packages(what: str) -> None:
    """Raise :class:`MissingPackage` naming the ``eval`` extra's packages that are missing.

    Args:
        what: the command or option that needs them, for the message (``"bench --data"``).
    """
    missing = [pip for name, pip in EVAL_PACKAGES.items() if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingPackage(
            f"{what} needs {' and '.join(missing)} for COCO mAP, not installed here; "
            "pip install 'understudy[eval]'"
        )


def coco_evaluate(
    split: DatasetSplit, predictions: dict[int, Detections]
) -> tuple[float, float, dict[str, float]]:
    """(mAP50-95, mAP50, per-class AP50-95), all in points, for detections keyed by
    ``record.image_id`` (boxes xyxy original pixels, class ids = class indices)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = to_coco_dict(split)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    results = []
    for image_id, det in predictions.items():
        for (x1, y1, x2, y2), s, c in zip(
            det.boxes.tolist(), det.scores.tolist(), det.class_ids.tolist()
        ):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(c) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(s),
                }
            )
    names = split.class_names
    if not results or not gt.dataset["annotations"]:
        return 0.0, 0.0, {n: 0.0 for n in names}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = [r.image_id for r in split.records]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # (T iou, R recall, K classes, A areas, M maxdets)
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[names[cat_id - 1]] = round(float(p.mean()) * 100, 2) if p.size else 0.0
    return round(float(ev.stats[0]) * 100, 2), round(float(ev.stats[1]) * 100, 2), per_class


def evaluate_runtime(path: str | Path, split: DatasetSplit, progress: bool = True) -> EvalResult:
    """Evaluate an exported model through the runtime pipeline (same code as serving)."""
    import cv2
    from tqdm import tqdm

    from runtime.pipeline import Detector

    predictions: dict[int, Detections] = {}
    t_infer = 0.0
    with Detector(
        path,
        score_threshold=EVAL_SCORE_THRESHOLD,
        iou_threshold=EVAL_IOU_THRESHOLD,
        max_detections=EVAL_MAX_DETECTIONS,
    ) as det:
        for r in tqdm(split.records, desc="eval", disable=not progress, leave=False):
            image = cv2.imread(str(r.path), cv2.IMREAD_COLOR)
            d, timings = det.detect(image)
            t_infer += (timings.preprocess_ms + timings.infer_ms + timings.postprocess_ms) / 1000
            predictions[r.image_id] = d
    m, m50, per_class = coco_evaluate(split, predictions)
    n = len(split.records)
    return EvalResult(m, m50, per_class, n, round(n / max(t_infer, 1e-9), 1))
