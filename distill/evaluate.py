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
    from torch.utils.data import DataLoader

    from distill.data.torch_dataset import DetectionDataset, collate

    ds = DetectionDataset(split, img_size, augment=False, cache=False)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate)
    predictions, t_model = predict_batches(
        model_outputs(model), ((b[0], b[2]) for b in loader), img_size, split.class_names, progress
    )
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


def model_outputs(model):
    """A function (B, 3, S, S) images -> (boxes (B, A, 4) xyxy network pixels, scores
    (B, A, C)) of a torch Detector, run in eval mode under inference_mode (the model's
    training flag is restored after each call)."""
    import torch

    def run(images):
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        with torch.inference_mode():
            out = model.decode(model(images.to(device)))
        model.train(was_training)
        return out

    return run


def predict_batches(
    outputs,
    batches,
    img_size: int,
    class_names: tuple[str, ...],
    progress: bool = False,
    score_threshold: float = EVAL_SCORE_THRESHOLD,
) -> tuple[dict[int, Detections], float]:
    """Detections per image id from network outputs, through the runtime's
    post-processing (so evaluation matches deployment).

    ``outputs``: images (B, 3, S, S) -> (boxes (B, A, 4) xyxy network pixels, scores
    (B, A, C)), e.g. :func:`model_outputs` or a teacher; ``batches``: (images, metas) pairs
    (metas: FrameMeta of the letterboxed images). Returns ({image_id: Detections in
    original-image pixels}, seconds spent in ``outputs``)."""
    from tqdm import tqdm

    post = decoded_postprocessor(class_names, img_size, score_threshold)
    predictions: dict[int, Detections] = {}
    t_model = 0.0
    for images, metas in tqdm(batches, desc="eval", disable=not progress, leave=False):
        t0 = time.perf_counter()
        boxes, scores = outputs(images)
        t_model += time.perf_counter() - t0
        arrays = {"boxes": boxes.float().cpu().numpy(), "scores": scores.float().cpu().numpy()}
        for meta, det in zip(metas, post(arrays, [letterbox_of(m, img_size) for m in metas])):
            predictions[int(meta.image_id)] = det
    return predictions, t_model


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


def decoded_postprocessor(
    class_names: tuple[str, ...], img_size: int, score_threshold: float = EVAL_SCORE_THRESHOLD
):
    """The runtime's post-processing of decoded (xyxy boxes, class scores) outputs at
    ``img_size`` (threshold, class-aware NMS, un-letterbox)."""
    from runtime.model_spec import ModelSpec
    from runtime.postprocess import Postprocessor

    spec = ModelSpec(
        class_names=tuple(class_names),
        input_size=(img_size, img_size),
        output_layout="decoded_xyxy",
    )
    return Postprocessor(
        spec,
        score_threshold=score_threshold,
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
