"""Deterministic synthetic detection benchmark: ``understudy data synth --out DIR --seed S``.

Classes (8, in index order): ``disc, ring, square, rect, triangle, trapezoid, cross, star``.
Three visually similar pairs differ only by a small detail or an aspect ratio:
disc / ring (a hole of 0.42 x the radius), square / rect (aspect 1 vs 1.6-2.2, either
orientation), triangle / trapezoid (the apex cut to a top edge 0.3 x the base). Colour
and texture (solid, gradient, stripes) are random and independent of the class, and all
shapes are rotated by up to +-20 degrees, so only shape tells the classes apart.

What makes it hard (so that a large detector measurably beats a small one):
- strong scale variation: object size (longer side) is log-uniform in
  ``[min_size, max_size]`` = 8..112 px at 320x240, so about a quarter are <= 16 px, where
  the similar pairs differ by 2-5 pixels;
- occlusion: objects are drawn in order and may overlap and be cut by the image border.
  Visibility rule: every labelled object keeps at least ``min_visible`` (0.4) of its
  silhouette visible; a placement that would push it (or an earlier object) below that is
  retried at a new random place up to ``placement_tries`` times, then left out. So every
  class-shaped thing in an image is labelled. The box is the tight box of the object's
  whole silhouette clipped to the image (amodal under occlusion), integer pixels;
- clutter that is no class: lines, arcs and thin ellipses (``max_distractors``);
- procedural textured backgrounds: smooth noise or gradients, stripes, soft blobs, grain;
- lighting: global gain 0.55-1.3, colour cast, an illumination ramp, gamma;
- Gaussian blur (probability ``blur_prob``), sensor noise (std up to ``max_noise``),
  JPEG compression (``jpeg_quality``).

Output (the same dataset in two formats; file names ``000000.jpg`` ... in generation order):

    OUT/images/{train,val}/*.jpg       OUT/labels/{train,val}/*.txt    OUT/data.yaml (yolo)
    OUT/annotations/instances_{train,val}.json                        OUT/coco.yaml (coco)
    OUT/unlabelled/*.jpg   frames of the same distribution without labels
    OUT/video.mp4 (or video.avi)  640x480 frames of smoothly moving objects, for streaming
    OUT/synth.json         config, seed, class names, counts, generator version

Site shift: ``generate(..., shift=SiteShift(background="tiles", cast=(1.25, 0.95, 0.6)))``
renders the same kind of scenes as another site's camera would see them (a background
family the standard set never has, a colour cast; :mod:`distill.data.synth_shift`), for
the site-adaptation benchmark (``benchmarks/adapt.py``).

Determinism: image ``i`` of split ``s`` uses ``default_rng([seed, code(s), i])`` and the
video ``default_rng([seed, 3])``, so the same seed and config give byte-identical label
files and identical images (on the same numpy/OpenCV build). COCO category id = class
index + 1 and image id = file position + 1, as in :func:`runtime.data.dataset.to_coco_dict`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from distill.data.synth_config import SynthConfig
from distill.data.synth_scene import (
    CLASS_NAMES,
    distractors,
    paint,
    photometric,
    render_mask,
    sample_object,
)
from distill.data.synth_shift import SiteShift, apply_cast, site_background
from distill.data.synth_video import write_video
from runtime.errors import DataError

GENERATOR_VERSION = 1
SPLIT_CODES = {"train": 0, "val": 1, "unlabelled": 2}


def render_scene(
    rng: np.random.Generator,
    cfg: SynthConfig,
    width: int,
    height: int,
    shift: SiteShift | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One labelled scene (under a site ``shift``, :mod:`distill.data.synth_shift`).

    Returns:
        image (H, W, 3) uint8 RGB, boxes (N, 4) float32 xyxy integer pixels, classes (N,) int64.
    """
    canvas = site_background(rng, height, width, shift)
    distractors(canvas, rng, int(rng.integers(0, cfg.max_distractors + 1)))
    owner = np.full((height, width), -1, dtype=np.int32)
    full_area: list[int] = []
    visible: list[int] = []
    boxes: list[list[int]] = []
    classes: list[int] = []
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        for _try in range(cfg.placement_tries):
            spec = sample_object(rng, width, height, (cfg.min_size, cfg.max_size))
            mask, x0, y0 = render_mask(spec)
            solid = mask >= 128
            area = int(solid.sum())
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x0 + mask.shape[1], width), min(y0 + mask.shape[0], height)
            if area < 12 or cx1 <= cx0 or cy1 <= cy0:
                continue
            inside = solid[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
            if inside.sum() < cfg.min_visible * area:
                continue
            under = owner[cy0:cy1, cx0:cx1][inside]
            covered = np.bincount(under[under >= 0], minlength=len(visible))
            after = np.asarray(visible, dtype=np.int64) - covered[: len(visible)]
            if np.any(after < cfg.min_visible * np.asarray(full_area)):
                continue
            paint(canvas, spec, mask, x0, y0)
            owner[cy0:cy1, cx0:cx1][inside] = len(visible)
            visible[:] = [*after.tolist(), int(inside.sum())]
            full_area.append(area)
            ys, xs = np.nonzero(inside)
            boxes.append([cx0 + xs.min(), cy0 + ys.min(), cx0 + xs.max() + 1, cy0 + ys.max() + 1])
            classes.append(spec.cls)
            break
    image = apply_cast(photometric(canvas, rng, cfg.blur_prob, cfg.max_blur, cfg.max_noise), shift)
    return (
        image,
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(classes, dtype=np.int64),
    )


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise DataError(f"{path}: JPEG encoding failed")
    path.write_bytes(buf.tobytes())


def yolo_lines(boxes: np.ndarray, classes: np.ndarray, width: int, height: int) -> str:
    """YOLO label text: ``cls cx cy w h`` normalized, 6 decimals, one object per line."""
    out = []
    for (x1, y1, x2, y2), c in zip(boxes.tolist(), classes.tolist()):
        out.append(
            f"{c} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
            f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}\n"
        )
    return "".join(out)


def _write_split(
    out: Path, split: str, count: int, seed: int, cfg: SynthConfig, shift: SiteShift | None = None
) -> dict:
    """Render one labelled split; returns its COCO dict."""
    img_dir, lbl_dir = out / "images" / split, out / "labels" / split
    img_dir.mkdir(parents=True)
    lbl_dir.mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        rng = np.random.default_rng([seed, SPLIT_CODES[split], i])
        image, boxes, classes = render_scene(rng, cfg, cfg.width, cfg.height, shift)
        name = f"{i:06d}"
        _write_jpeg(img_dir / f"{name}.jpg", image, cfg.jpeg_quality)
        (lbl_dir / f"{name}.txt").write_text(yolo_lines(boxes, classes, cfg.width, cfg.height))
        images.append(
            {"id": i + 1, "file_name": f"{name}.jpg", "width": cfg.width, "height": cfg.height}
        )
        for (x1, y1, x2, y2), c in zip(boxes.astype(int).tolist(), classes.tolist()):
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": c + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(CLASS_NAMES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def generate(
    out_dir: str | Path,
    seed: int,
    config: SynthConfig | None = None,
    shift: SiteShift | None = None,
) -> Path:
    """Write the synthetic dataset to ``out_dir`` (see the module docstring); returns it.
    With ``shift`` every image and the video are rendered under that site shift
    (:mod:`distill.data.synth_shift`), recorded in synth.json as ``"shift"``.

    The data is written to ``<out_dir>.partial`` and renamed into place at the end. If
    ``out_dir`` already holds a dataset from the same seed, config and generator version,
    it is kept and returned; any other existing ``out_dir`` is a :class:`DataError`.
    """
    cfg = config or SynthConfig()
    out = Path(out_dir)
    if out.exists():
        try:
            prior = json.loads((out / "synth.json").read_text())
        except (OSError, json.JSONDecodeError):
            prior = None
        shift_dict = _shift_dict(shift)
        if prior and (
            prior.get("seed"),
            prior.get("config"),
            prior.get("generator_version"),
            prior.get("shift"),
        ) == (seed, asdict(cfg), GENERATOR_VERSION, shift_dict):
            return out
        raise DataError(
            f"{out}: already exists and is not a synth dataset of this seed and config; "
            "remove it or choose another --out"
        )
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    counts: dict[str, Any] = {}
    (tmp / "annotations").mkdir()
    for split in ("train", "val"):
        coco = _write_split(tmp, split, getattr(cfg, split), seed, cfg, shift)
        per_class = np.bincount(
            [a["category_id"] - 1 for a in coco["annotations"]], minlength=len(CLASS_NAMES)
        )
        counts[split] = {
            "images": len(coco["images"]),
            "objects": len(coco["annotations"]),
            "per_class": dict(zip(CLASS_NAMES, per_class.tolist())),
        }
        (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco) + "\n")
    unl = tmp / "unlabelled"
    unl.mkdir()
    for i in range(cfg.unlabelled):
        rng = np.random.default_rng([seed, SPLIT_CODES["unlabelled"], i])
        image, _, _ = render_scene(rng, cfg, cfg.width, cfg.height, shift)
        _write_jpeg(unl / f"{i:06d}.jpg", image, cfg.jpeg_quality)
    counts["unlabelled"] = {"images": cfg.unlabelled}
    video = write_video(tmp / "video", seed, cfg, shift) if cfg.video_frames else None
    counts["video"] = {"frames": cfg.video_frames, "file": video.name if video else None}
    names = list(CLASS_NAMES)
    _write_yamls(tmp, names)
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "config": asdict(cfg),
        "class_names": names,
        "counts": counts,
    }
    if shift is not None:
        meta["shift"] = _shift_dict(shift)
    (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    tmp.rename(out)
    return out


def _shift_dict(shift: SiteShift | None) -> dict | None:
    """The shift as synth.json records it (None: no shift; lists, as JSON reads back)."""
    return None if shift is None else json.loads(json.dumps(asdict(shift)))


def _write_yamls(out: Path, names: list[str]) -> None:
    """``data.yaml`` (YOLO layout) and ``coco.yaml`` (COCO layout) of a generated dataset."""
    data_yaml = {
        "format": "yolo",
        "names": names,
        "nc": len(names),
        "train": "images/train",
        "val": "images/val",
    }
    coco_yaml = {"format": "coco", "names": names, "nc": len(names)}
    for split in ("train", "val"):
        coco_yaml[split] = {
            "annotations": f"annotations/instances_{split}.json",
            "images": f"images/{split}",
        }
    (out / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
    (out / "coco.yaml").write_text(yaml.safe_dump(coco_yaml, sort_keys=False))
