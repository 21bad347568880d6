"""A handful of images that a nano detector overfits in ``STEPS`` steps: the data of the
``handful`` and ``overfit`` fixtures (tests/distill/conftest.py), shared by the tests that
need a model that has learned something (tests/distill/test_learning.py explains the
numbers) and one that has not.

Four 160x120 images of one or two large discs and squares on a dark noisy background. The
training split lists each image ``STEPS`` times, so one epoch of batches of 4 is ``STEPS``
steps; the val split is the four images once. At 96 px the objects are 22-35 px.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml

NAMES = ["disc", "square"]
IMAGES = 4  # distinct images
STEPS = 100  # optimizer steps of the overfitting run
SIZE = 96  # network input
# No augmentation (every step sees the same pixels), no warm-up, a high learning rate.
PLAIN = [
    "model=nano",
    f"img_size={SIZE}",
    "epochs=1",
    "batch_size=4",
    "bf16=off",
    "close_mosaic=0",
    "warmup_epochs=0",
    "lr=0.01",
    "aug.mosaic=0",
    "aug.scale=[1,1]",
    "aug.translate=0",
    "aug.flip_lr=0",
    "aug.hsv_h=0",
    "aug.hsv_s=0",
    "aug.hsv_v=0",
]


def scene(rng: np.random.Generator, w: int = 160, h: int = 120) -> tuple[np.ndarray, str]:
    """(image (h, w, 3) uint8 BGR, YOLO label text) with 1-2 non-overlapping objects."""
    img = np.full((h, w, 3), 40, np.uint8) + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
    boxes: list[tuple[int, int, int, int]] = []
    lines = []
    for _ in range(int(rng.integers(1, 3))):
        s = int(rng.integers(36, 60))
        x0, y0 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        if any(x0 < b[2] and b[0] < x0 + s and y0 < b[3] and b[1] < y0 + s for b in boxes):
            continue
        boxes.append((x0, y0, x0 + s, y0 + s))
        cls = int(rng.integers(0, 2))
        colour = tuple(int(v) for v in rng.integers(120, 256, 3))
        if cls == 0:
            cv2.circle(img, (x0 + s // 2, y0 + s // 2), s // 2, colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(img, (x0, y0), (x0 + s - 1, y0 + s - 1), colour, -1)
        lines.append(f"{cls} {(x0 + s / 2) / w:.6f} {(y0 + s / 2) / h:.6f} {s / w:.6f} {s / h:.6f}")
    return img, "\n".join(lines) + "\n"


def make_handful(root: Path) -> Path:
    """YOLO dataset under ``root``: train = the 4 images x STEPS, val = the 4 images, and
    ``unlabelled/`` = a copy of val image 0."""
    for d in ("images/train", "labels/train", "images/val", "labels/val", "unlabelled"):
        (root / d).mkdir(parents=True)
    for i in range(IMAGES):
        img, text = scene(np.random.default_rng([0, i]))
        cv2.imwrite(str(root / f"images/val/{i}.png"), img)
        (root / f"labels/val/{i}.txt").write_text(text)
        for k in range(STEPS):
            shutil.copyfile(root / f"images/val/{i}.png", root / f"images/train/{i}_{k}.png")
            (root / f"labels/train/{i}_{k}.txt").write_text(text)
    shutil.copyfile(root / "images/val/0.png", root / "unlabelled/frame.png")
    data = {"names": NAMES, "train": "images/train", "val": "images/val"}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root
