"""The project's COCO numbers equal pycocotools' run by hand on the same files."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from runtime.data.coco import load_coco_split
from runtime.evaluate import coco_evaluate
from runtime.types import Detections

CATS = [(3, "cone"), (7, "crate"), (11, "drone")]  # non-contiguous ids on purpose
GT = {  # image id -> [(cat id, x, y, w, h)]
    5: [(3, 10, 10, 20, 30), (7, 50, 5, 30, 30)],
    9: [(11, 5, 40, 10, 10), (3, 60, 50, 25, 20), (7, 20, 20, 12, 12)],
    12: [(11, 70, 10, 15, 15)],
}
PRED = [  # (image id, cat id, x, y, w, h, score): hits, near misses, wrong classes, dupes
    (5, 3, 11, 11, 20, 29, 0.9),
    (5, 7, 52, 6, 28, 30, 0.8),
    (5, 11, 10, 10, 20, 30, 0.3),
    (9, 11, 6, 41, 9, 10, 0.7),
    (9, 3, 58, 48, 30, 25, 0.6),
    (9, 7, 40, 40, 12, 12, 0.5),
    (9, 3, 61, 50, 24, 20, 0.2),
    (12, 11, 72, 12, 15, 15, 0.95),
    (12, 3, 0, 0, 5, 5, 0.4),
]


def write_fixture(tmp_path: Path) -> Path:
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    images, anns = [], []
    for image_id, objects in GT.items():
        name = f"{image_id}.png"
        cv2.imwrite(str(images_dir / name), np.zeros((80, 100, 3), np.uint8))
        images.append({"id": image_id, "file_name": name, "width": 100, "height": 80})
        for cat, x, y, w, h in objects:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": n} for i, n in CATS]
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path


def reference(path: Path, preds: list[tuple]) -> tuple[float, float, np.ndarray]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        dt = gt.loadRes(
            [
                {"image_id": i, "category_id": c, "bbox": [x, y, w, h], "score": s}
                for i, c, x, y, w, h, s in preds
            ]
        )
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0] * 100, ev.stats[1] * 100, ev.eval["precision"]


def project(path: Path, preds: list[tuple]) -> tuple[float, float, dict[str, float]]:
    split = load_coco_split(path, path.parent / "images")
    index = {cat: k for k, (cat, _) in enumerate(CATS)}
    by_image: dict[int, list] = {i: [] for i in GT}
    for i, c, x, y, w, h, s in preds:
        by_image[i].append(([x, y, x + w, y + h], s, index[c]))
    dets = {
        i: Detections(
            np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
            np.array([r[1] for r in rows], np.float32),
            np.array([r[2] for r in rows], np.int32),
        )
        for i, rows in by_image.items()
    }
    return coco_evaluate(split, dets)


def test_matches_pycocotools_on_the_same_input(tmp_path: Path) -> None:
    path = write_fixture(tmp_path)
    ref50_95, ref50, precision = reference(path, PRED)
    m, m50, per_class = project(path, PRED)
    assert 0 < ref50_95 < 100, "fixture must be a non-trivial case"
    assert m == pytest.approx(round(ref50_95, 2), abs=1e-9)
    assert m50 == pytest.approx(round(ref50, 2), abs=1e-9)
    for k, (_, name) in enumerate(CATS):
        p = precision[:, :, k, 0, -1]
        assert per_class[name] == pytest.approx(round(float(p[p > -1].mean()) * 100, 2), abs=1e-9)


def test_perfect_and_empty_predictions(tmp_path: Path) -> None:
    path = write_fixture(tmp_path)
    perfect = [(i, c, x, y, w, h, 0.9) for i, objs in GT.items() for c, x, y, w, h in objs]
    m, m50, per_class = project(path, perfect)
    assert m == 100.0 and m50 == 100.0 and set(per_class.values()) == {100.0}
    m, m50, _ = project(path, [])
    assert m == 0.0 and m50 == 0.0
