"""YOLO txt datasets (the Ultralytics layout).

Layout: ``.../images/<split>/x.jpg`` pairs with ``.../labels/<split>/x.txt`` (the last
``images`` path component replaced by ``labels``; without an ``images`` component the
label files sit next to the images). Each label line is ``class cx cy w h`` with the box
centre and size normalized by the image width/height.

A split's images are given as Ultralytics takes them: a folder (searched recursively), a
``.txt`` file listing image paths one per line (relative ones are relative to the list's
folder; lines naming other files than images are ignored), or a list of those. Image ids
are 1-based positions in the sorted list of all of them.

Validation policy (file:line in every message):
- an image that cannot be read (missing, empty, not an image, a truncated JPEG):
  :class:`DataError`;
- a label file with no image beside it (``labels/x.txt`` but no ``images/x.*``), for
  a folder: DataError;
- a line with other than 5 fields, a non-numeric or non-finite field, a non-integer
  class or a class id outside ``[0, len(names))``: DataError;
- a line of an image list naming a missing file: DataError;
- an image without a label file: kept as an image with no objects, counted warning;
  an empty label file: an image with no objects, no warning;
- degenerate and out-of-image boxes: see :func:`runtime.data.records.check_box`.

With ``skip_bad`` each of those DataErrors is recorded (``DatasetSplit.skipped``) instead
and loading goes on: an unreadable image is left out, and so is an image whose label
file has a bad line (a partly labelled image would teach that its unlabelled objects are
background), as Ultralytics does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.data.records import (
    IMAGE_SUFFIXES,
    BadInputs,
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


def label_path_for(image: Path) -> Path:
    """The label file of ``image``: ``.../images/a/x.jpg`` -> ``.../labels/a/x.txt``."""
    return labels_dir_for(image.parent) / f"{image.stem}.txt"


def parse_label_file(
    label_path: Path,
    width: int,
    height: int,
    num_classes: int,
    warnings: WarningCounter,
    bad: BadInputs | None = None,
    image: Path | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Read one YOLO label file (of ``image``).

    Returns:
        boxes (N, 4) float32 xyxy in original-image pixels (clipped), classes (N,) int64;
        None when ``bad`` skips a malformed line (the image is then left out).

    Raises:
        DataError: naming ``label_path:line`` for the first malformed line, unless ``bad``
            skips it (each malformed line is then recorded).
    """
    bad = bad or BadInputs()
    try:
        text = label_path.read_text()
    except UnicodeDecodeError as e:
        bad.skip(DataError(f"{label_path}: not a text file ({e})"), label_path, image=image)
        return None
    boxes: list[tuple[float, float, float, float]] = []
    classes: list[int] = []
    complete = True
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            cls, box = parse_label_line(
                fields, f"{label_path}:{lineno}", width, height, num_classes, warnings
            )
        except DataError as e:
            bad.skip(e, label_path, lineno, image)
            complete = False
            continue
        if box is not None:
            boxes.append(box)
            classes.append(cls)
    if not complete:
        return None
    return boxes_array(boxes), np.asarray(classes, dtype=np.int64)


def parse_label_line(
    fields: list[str], where: str, width: int, height: int, num_classes: int, warnings
) -> tuple[int, tuple[float, float, float, float] | None]:
    """(class, xyxy box in pixels, or None for a skipped degenerate box) of one label line.

    Raises:
        DataError: naming ``where`` (``file:line``) when the line is malformed.
    """
    if len(fields) != 5:
        extra = (
            " (polygon/segment labels are not supported; convert them to boxes)"
            if len(fields) > 5
            else ""
        )
        raise DataError(f"{where}: expected 5 fields 'class cx cy w h', got {len(fields)}{extra}")
    try:
        values = [float(v) for v in fields]
    except ValueError:
        bad = next(v for v in fields if not _is_float(v))
        raise DataError(f"{where}: field {bad!r} is not a number") from None
    if not all(np.isfinite(values)):
        raise DataError(f"{where}: non-finite value in {' '.join(fields)!r}")
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
    return cls, check_box(box, width, height, where, warnings, hint=YOLO_HINT)


def load_yolo_split(
    images: str | Path | Sequence[str | Path],
    class_names: tuple[str, ...],
    source: str | None = None,
    skip_bad: bool = False,
) -> DatasetSplit:
    """Load one split of a YOLO dataset.

    Args:
        images: a folder of images (``.../images/<split>``, searched recursively), a
            ``.txt`` list of image paths, or a list of those.
        class_names: class index -> name (from the dataset YAML ``names``).
        source: what to call the dataset in messages (default: ``images``).
        skip_bad: record damaged images and label lines in ``skipped`` and leave their
            images out, instead of stopping at the first (see the module docstring).

    Returns:
        A :class:`DatasetSplit`; image ids are 1-based positions in path order.
    """
    entries = [Path(images)] if isinstance(images, str | Path) else [Path(e) for e in images]
    name = source or ", ".join(str(e) for e in entries)
    bad, warnings = BadInputs(skip_bad), WarningCounter()
    paths = sorted({p for entry in entries for p in _entry_images(entry, bad, warnings)})
    if not paths:
        raise DataError(f"{name}: no images found (looked for .jpg/.png/... files)")
    expected = {label_path_for(p) for p in paths}
    for folder in (e for e in entries if e.is_dir()):
        _check_label_files(folder, expected, bad)
    records: list[ImageRecord] = []
    for image_id, path in enumerate(paths, start=1):
        record = _load_record(path, image_id, class_names, bad, warnings)
        if record is not None:
            records.append(record)
    lines = warnings.lines()
    for line in lines:
        log.warning("%s: %s", name, line)
    return DatasetSplit(records, tuple(class_names), name, lines, tuple(bad.items))


def _entry_images(entry: Path, bad: BadInputs, warnings: WarningCounter) -> list[Path]:
    """The images of one ``images`` entry: a folder or a ``.txt`` list of image paths."""
    if entry.is_dir() or entry.suffix.lower() != ".txt":
        return list_images(entry, recursive=True)
    try:
        text = entry.read_text()
    except FileNotFoundError as e:
        raise DataError(f"{entry}: image list file not found") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{entry}: image list is not a text file ({e})") from e
    images = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        path = entry.parent / line.strip()  # an absolute line stays as it is
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            warnings.add(
                "listed file is not an image (by its suffix), ignored", f"{entry}:{lineno}"
            )
        elif not path.is_file():
            error = DataError(f"{entry}:{lineno}: listed image {path} not found")
            bad.skip(error, entry, lineno, path)
        else:
            images.append(path)
    return images


def _check_label_files(folder: Path, expected: set[Path], bad: BadInputs) -> None:
    """Every label file under the folder's label directory is in ``expected`` (the label
    files of the split's images)."""
    labels_dir = labels_dir_for(folder)
    if not labels_dir.is_dir():
        return
    for label in sorted(labels_dir.rglob("*.txt")):
        if label.name != "classes.txt" and label not in expected:
            parts = list(label.with_suffix("").parts)
            if "labels" in parts:  # the image it would belong to: labels -> images
                parts[len(parts) - 1 - parts[::-1].index("labels")] = "images"
            error = DataError(
                f"{label}: no image for this label file "
                f"(expected {Path(*parts)}.jpg or another image suffix)"
            )
            bad.skip(error, label)


def _load_record(
    path: Path, image_id: int, class_names: tuple[str, ...], bad: BadInputs, warnings
) -> ImageRecord | None:
    """The record of one image and its label file; None when ``bad`` leaves it out."""
    try:
        width, height = read_image_size(path)
    except DataError as e:
        bad.skip(e, path, image=path)
        return None
    label = label_path_for(path)
    if not label.is_file():
        warnings.add("image without a label file (treated as no objects)", str(path))
        return ImageRecord(
            path, boxes_array([]), np.zeros(0, dtype=np.int64), image_id, width, height
        )
    parsed = parse_label_file(label, width, height, len(class_names), warnings, bad, path)
    if parsed is None:
        return None
    return ImageRecord(path, *parsed, image_id, width, height)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
