"""COCO evaluation of a torch Detector (and of any model file, by its suffix).

The torch model's outputs go through the runtime's post-processing, so evaluation matches
deployment; the scoring is :func:`runtime.evaluate.coco_evaluate` (pycocotools).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.data.records import DatasetSplit
from runtime.evaluate import (
    EVAL_IOU_THRESHOLD,
    EVAL_MAX_DETECTIONS,
    EVAL_SCORE_THRESHOLD,
    EvalResult,
    coco_evaluate,
    evaluate_runtime,
)
from runtime.types import Detections


def evaluate_model(
    model, split: DatasetSplit, img_size: int, batch_size: int = 16, progress: bool = True
) -> EvalResult:
    """Evaluate a torch Detector (eval mode, fp32) on a split."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from distill.data.torch_dataset import DetectionDataset, collate

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    post = _postprocessor(model, split, img_size)
    ds = DetectionDataset(split, img_size, augment=False, cache=False)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate)
    predictions: dict[int, Detections] = {}
    t_model = 0.0
    with torch.inference_mode():
        for images, _, metas in tqdm(loader, desc="eval", disable=not progress, leave=False):
            t0 = time.perf_counter()
            boxes, scores = model.decode(model(images.to(device)))
            t_model += time.perf_counter() - t0
            outputs = {"boxes": boxes.float().cpu().numpy(), "scores": scores.float().cpu().numpy()}
            for meta, det in zip(metas, post(outputs, [letterbox_of(m, img_size) for m in metas])):
                predictions[int(meta.image_id)] = det
    model.train(was_training)
    m, m50, per_class = coco_evaluate(split, predictions)
    return EvalResult(m, m50, per_class, len(ds), round(len(ds) / max(t_model, 1e-9), 1))


def evaluate_detect(
    detect: Callable[[list[np.ndarray]], list[Detections]],
    split: DatasetSplit,
    batch_size: int = 16,
    progress: bool = True,
) -> EvalResult:
    """COCO-evaluate a detector that takes source images (a teacher's ``detect``).

    ``detect(images)``: images (H, W, 3) uint8 RGB as decoded from the split's files;
    returns one :class:`Detections` per image, boxes (N, 4) xyxy in that image's pixels.
    images/s counts the time spent in ``detect``.
    """
    from tqdm import tqdm

    from runtime.data.records import decode_image

    records = split.records
    predictions: dict[int, Detections] = {}
    t_model = 0.0
    starts = range(0, len(records), batch_size)
    for i in tqdm(starts, desc="eval", disable=not progress, leave=False):
        batch = records[i : i + batch_size]
        images = [decode_image(r.path) for r in batch]
        t0 = time.perf_counter()
        dets = detect(images)
        t_model += time.perf_counter() - t0
        for r, det in zip(batch, dets):
            predictions[int(r.image_id)] = det
    m, m50, per_class = coco_evaluate(split, predictions)
    n = len(records)
    return EvalResult(m, m50, per_class, n, round(n / max(t_model, 1e-9), 1))


def evaluate_path(
    path: str | Path,
    split: DatasetSplit,
    img_size: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> EvalResult:
    """Evaluate a checkpoint (.pt, torch) or an exported model (.onnx/.engine, runtime)."""
    path = Path(path)
    if path.suffix == ".pt":
        from distill.checkpoint import load_detector

        model, info = load_detector(path)
        return evaluate_model(model, split, int(img_size or info["img_size"]), batch_size, progress)
    return evaluate_runtime(path, split, progress=progress)


def _postprocessor(model, split: DatasetSplit, img_size: int):
    """The runtime's post-processing (so evaluation matches deployment) for a torch model's
    decoded outputs at ``img_size``."""
    return eval_postprocessor(split.class_names, img_size, tuple(model.strides), model.reg_max)


def eval_postprocessor(
    class_names: tuple[str, ...] | list[str],
    img_size: int,
    strides: tuple[int, ...] = (8, 16, 32),
    reg_max: int = 16,
):
    """The runtime's post-processing with the evaluation thresholds, for decoded outputs
    ``{"boxes": (B, A, 4) xyxy network pixels, "scores": (B, A, C)}`` at ``img_size``."""
    from runtime.model_spec import ModelSpec
    from runtime.postprocess import Postprocessor

    spec = ModelSpec(
        class_names=tuple(class_names),
        input_size=(img_size, img_size),
        strides=strides,
        reg_max=reg_max,
    )
    return Postprocessor(
        spec,
        score_threshold=EVAL_SCORE_THRESHOLD,
        iou_threshold=EVAL_IOU_THRESHOLD,
        max_detections=EVAL_MAX_DETECTIONS,
    )


def letterbox_of(meta, img_size: int):
    """The runtime Letterbox described by a dataset FrameMeta."""
    from runtime.preprocess import Letterbox

    return Letterbox(
        float(meta.scale),
        int(meta.pad[0]),
        int(meta.pad[1]),
        tuple(meta.orig_hw),
        (img_size, img_size),
    )
