"""YOLO txt datasets (the Ultralytics layout).

Layout: ``.../images/<split>/x.jpg`` pairs with ``.../labels/<split>/x.txt`` (the last
``images`` path component replaced by ``labels``; without an ``images`` component the
label files sit next to the images). Each label line is ``class cx cy w h`` with the box
centre and size normalized by the image width/height.

Validation policy (file:line in every message):
- an image that cannot be read (missing, not an image): :class:`DataError`;
- a label file with no image beside it (``labels/x.txt`` but no ``images/x.*``): DataError;
- a line with other than 5 fields, a non-numeric or non-finite field, a non-integer
  class or a class id outside ``[0, len(names))``: DataError;
- an image without a label file: kept as an image with no objects, counted warning;
  an empty label file: an image with no objects, no warning;
- degenerate and out-of-image boxes: see :func:`runtime.data.records.check_box`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from runtime.data.records import (
    DatasetSplit,
    ImageRecord,
    WarningCounter,
    boxes_array,
    check_box,
    list_images,
    read_image_size,
)
from runtime.errors import DataError

log = logging.getLogger(__name__)

YOLO_HINT = "YOLO coordinates are the box centre and size normalized to [0, 1]"


def labels_dir_for(images_dir: Path) -> Path:
    """The label directory paired with ``images_dir`` (last ``images`` part -> ``labels``)."""
    parts = list(images_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images_dir


def parse_label_file(
    label_path: Path, width: int, height: int, num_classes: int, warnings: WarningCounter
) -> tuple[np.ndarray, np.ndarray]:
    """Read one YOLO label file.

    Returns:
        boxes (N, 4) float32 xyxy in original-image pixels (clipped), classes (N,) int64.

    Raises:
        DataError: naming ``label_path:line`` for any malformed line.
    """
    try:
        text = label_path.read_text()
    except UnicodeDecodeError as e:
        raise DataError(f"{label_path}: not a text file ({e})") from e
    boxes: list[tuple[float, float, float, float]] = []
    classes: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label_path}:{lineno}"
        if len(fields) != 5:
            extra = (
                " (polygon/segment labels are not supported; convert them to boxes)"
                if len(fields) > 5
                else ""
            )
            raise DataError(
                f"{where}: expected 5 fields 'class cx cy w h', got {len(fields)}{extra}"
            )
        try:
            values = [float(v) for v in fields]
        except ValueError:
            bad = next(v for v in fields if not _is_float(v))
            raise DataError(f"{where}: field {bad!r} is not a number") from None
        if not all(np.isfinite(values)):
            raise DataError(f"{where}: non-finite value in {line.strip()!r}")
        cls_f, cx, cy, bw, bh = values
        if cls_f != int(cls_f):
            raise DataError(f"{where}: class id {fields[0]!r} is not an integer")
        cls = int(cls_f)
        if not 0 <= cls < num_classes:
            raise DataError(
                f"{where}: class id {cls} out of range [0, {num_classes}) "
                f"(the dataset names {num_classes} classes)"
            )
        box = (
            (cx - bw / 2) * width,
            (cy - bh / 2) * height,
            (cx + bw / 2) * width,
            (cy + bh / 2) * height,
        )
        checked = check_box(box, width, height, where, warnings, hint=YOLO_HINT)
        if checked is not None:
            boxes.append(checked)
            classes.append(cls)
    return boxes_array(boxes), np.asarray(classes, dtype=np.int64)


def load_yolo_split(
    images_dir: str | Path, class_names: tuple[str, ...], source: str | None = None
) -> DatasetSplit:
    """Load one split of a YOLO dataset.

    Args:
        images_dir: folder of images (``.../images/<split>``).
        class_names: class index -> name (from the dataset YAML ``names``).
        source: what to call the dataset in messages (default: ``images_dir``).

    Returns:
        A :class:`DatasetSplit`; image ids are 1-based positions in file-name order.
    """
    images_dir = Path(images_dir)
    labels_dir = labels_dir_for(images_dir)
    images = list_images(images_dir)
    if not images:
        raise DataError(f"{images_dir}: no images found (looked for .jpg/.png/... files)")
    stems = {p.stem for p in images}
    if labels_dir.is_dir():
        for label in sorted(labels_dir.glob("*.txt")):
            if label.stem not in stems and label.name != "classes.txt":
                raise DataError(
                    f"{label}: no image for this label file "
                    f"(expected {images_dir / label.stem}.jpg or another image suffix)"
                )
    warnings = WarningCounter()
    records: list[ImageRecord] = []
    for image_id, path in enumerate(images, start=1):
        width, height = read_image_size(path)
        label = labels_dir / f"{path.stem}.txt"
        if label.is_file():
            boxes, classes = parse_label_file(label, width, height, len(class_names), warnings)
        else:
            warnings.add("image without a label file (treated as no objects)", str(path))
            boxes, classes = boxes_array([]), np.zeros(0, dtype=np.int64)
        records.append(ImageRecord(path, boxes, classes, image_id, width, height))
    lines = warnings.lines()
    for line in lines:
        log.warning("%s: %s", source or images_dir, line)
    return DatasetSplit(records, tuple(class_names), str(source or images_dir), lines)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
