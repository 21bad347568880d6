"""COCO JSON datasets (``instances_*.json``: images, annotations, categories).

``bbox`` is ``[x, y, width, height]`` in pixels. Category ids (any integers) map to
contiguous class indices in increasing id order; class names are the category names.
``iscrowd: 1`` annotations are skipped (logged with a count): they are regions, not
objects, and this project evaluates them as absent.

Validation policy (the JSON file and ``images[i]`` / ``annotations[i]`` in every message):
- unreadable JSON, missing ``images``/``categories``, a malformed entry, duplicate ids,
  an annotation whose ``image_id`` or ``category_id`` is unknown (the COCO form of "class
  id out of range"): :class:`DataError`;
- an image file that is missing, unreadable, or whose header size differs from the JSON
  ``width``/``height``: DataError;
- degenerate and out-of-image boxes: see :func:`runtime.data.records.check_box`.

With ``skip_bad`` the DataErrors of single entries (an image entry or its file, an
annotation) are recorded (``DatasetSplit.skipped``) instead and loading goes on: the image
is left out, with all its annotations (a partly labelled image would teach that its
unlabelled objects are background). Errors of the file as a whole (not JSON, no
``categories``) still stop the load.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from runtime.data.records import (
    BadInputs,
    DatasetSplit,
    ImageRecord,
    WarningCounter,
    boxes_array,
    check_box,
    read_image_size,
)
from runtime.errors import DataError

log = logging.getLogger(__name__)

COCO_HINT = "COCO bbox is [x, y, width, height] in pixels"


def read_json(path: Path) -> Any:
    """Parse a JSON file; DataError naming the file (and line) when it cannot be read."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise DataError(f"{path}: annotation file not found") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file ({e})") from e


def _int_field(entry: Any, key: str, where: str) -> int:
    if not isinstance(entry, dict) or key not in entry:
        raise DataError(f"{where}: missing {key!r}")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise DataError(f"{where}: {key!r} must be an integer, got {value!r}")
    return int(value)


def parse_categories(data: dict, path: Path) -> tuple[dict[int, int], tuple[str, ...]]:
    """Category id -> class index (ids in increasing order), and the class names."""
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise DataError(f"{path}: 'categories' is missing or empty")
    by_id: dict[int, str] = {}
    for i, cat in enumerate(cats):
        where = f"{path}: categories[{i}]"
        cid = _int_field(cat, "id", where)
        if cid in by_id:
            raise DataError(f"{where}: duplicate category id {cid}")
        by_id[cid] = str(cat.get("name", cid))
    ids = sorted(by_id)
    return {cid: k for k, cid in enumerate(ids)}, tuple(by_id[cid] for cid in ids)


def load_coco_split(
    annotations: str | Path,
    images_dir: str | Path,
    class_names: tuple[str, ...] | None = None,
    source: str | None = None,
    skip_bad: bool = False,
) -> DatasetSplit:
    """Load one split from a COCO annotation file.

    Args:
        annotations: the ``instances_<split>.json`` file.
        images_dir: folder the images' ``file_name`` entries are relative to.
        class_names: if given (from a dataset YAML), must equal the category names in
            increasing id order.
        source: what to call the dataset in messages (default: the JSON path).
        skip_bad: record damaged entries and images in ``skipped`` and leave their images
            out, instead of stopping at the first (see the module docstring).

    Returns:
        A :class:`DatasetSplit` with records in increasing image-id order.
    """
    path, images_dir = Path(annotations), Path(images_dir)
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a COCO object with 'images' and 'annotations'")
    cat_index, names = parse_categories(data, path)
    if class_names is not None and tuple(class_names) != names:
        raise DataError(
            f"{path}: category names {list(names)} (in id order) differ from the dataset "
            f"YAML names {list(class_names)}; make them the same or drop 'names' from the YAML"
        )
    bad = BadInputs(skip_bad)
    images, left_out = parse_images(data, path, images_dir, bad)
    warnings = WarningCounter()
    per_image = parse_annotations(data, path, images, cat_index, warnings, bad, left_out)
    records = [
        ImageRecord(file, boxes_array(b), np.asarray(c, dtype=np.int64), iid, w, h)
        for iid, (file, w, h) in sorted(images.items())
        if iid not in left_out
        for b, c in [per_image[iid]]
    ]
    lines = warnings.lines()
    for line in lines:
        log.warning("%s: %s", source or path, line)
    return DatasetSplit(records, names, str(source or path), lines, tuple(bad.items))


def parse_images(
    data: dict, path: Path, images_dir: Path, bad: BadInputs | None = None
) -> tuple[dict[int, tuple[Path, int, int]], set[int]]:
    """Image id -> (image file, width, height); each file's header size must match the
    JSON ``width``/``height`` where given. Also the ids of the images ``bad`` left out."""
    bad = bad or BadInputs()
    if not isinstance(data.get("images"), list):
        raise DataError(f"{path}: 'images' is missing or not a list")
    images: dict[int, tuple[Path, int, int]] = {}
    left_out: set[int] = set()
    for i, im in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        try:
            iid = _int_field(im, "id", where)
            if iid in images or iid in left_out:
                raise DataError(f"{where}: duplicate image id {iid}")
        except DataError as e:
            bad.skip(e, path)
            continue
        file = images_dir / im["file_name"] if isinstance(im.get("file_name"), str) else None
        try:
            images[iid] = _image_entry(im, where, file)
        except DataError as e:
            bad.skip(e, file or path, image=file)
            left_out.add(iid)
    return images, left_out


def _image_entry(im: dict, where: str, file: Path | None) -> tuple[Path, int, int]:
    """(file, width, height) of one ``images`` entry, its file's header read."""
    if file is None:
        raise DataError(f"{where}: missing 'file_name'")
    w, h = read_image_size(file)
    if "width" in im or "height" in im:
        jw, jh = _int_field(im, "width", where), _int_field(im, "height", where)
        if (jw, jh) != (w, h):
            raise DataError(f"{where}: JSON size {jw}x{jh} but {file} is {w}x{h}")
    return file, w, h


def parse_annotations(
    data: dict,
    path: Path,
    images: dict[int, tuple[Path, int, int]],
    cat_index: dict[int, int],
    warnings: WarningCounter,
    bad: BadInputs | None = None,
    left_out: set[int] | None = None,
) -> dict[int, tuple[list[tuple[float, float, float, float]], list[int]]]:
    """Image id -> (xyxy boxes in original-image pixels, class indices), every image of
    ``images`` included; crowd annotations are skipped and counted in the log.

    Annotations of the images in ``left_out`` are passed over; an annotation that ``bad``
    skips adds its image to ``left_out``.
    """
    bad = bad or BadInputs()
    left_out = left_out if left_out is not None else set()
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise DataError(f"{path}: 'annotations' is not a list")
    per_image: dict[int, tuple[list, list]] = {iid: ([], []) for iid in images}
    crowd = 0
    for i, ann in enumerate(anns):
        where = f"{path}: annotations[{i}]"
        if isinstance(ann, dict) and "id" in ann:
            where += f" (id {ann['id']})"
        iid = ann.get("image_id") if isinstance(ann, dict) else None
        iid = iid if isinstance(iid, int | float) else None  # a usable key, checked below
        if iid in left_out:
            continue
        try:
            parsed = _annotation(ann, where, images, cat_index, warnings)
        except DataError as e:
            known = iid in images
            bad.skip(e, path, image=images[iid][0] if known else None)
            if known:
                left_out.add(iid)
            continue
        if parsed is None:
            crowd += 1
        elif parsed[1] is not None:
            per_image[parsed[0]][0].append(parsed[1])
            per_image[parsed[0]][1].append(parsed[2])
    if crowd:
        log.info("%s: skipped %d iscrowd annotation(s)", path, crowd)
    return per_image


def _annotation(
    ann: Any,
    where: str,
    images: dict[int, tuple[Path, int, int]],
    cat_index: dict[int, int],
    warnings: WarningCounter,
) -> tuple[int, tuple[float, float, float, float] | None, int] | None:
    """(image id, checked xyxy box or None when degenerate, class index) of one
    annotation; None for a crowd annotation."""
    iid = _int_field(ann, "image_id", where)
    cid = _int_field(ann, "category_id", where)
    if iid not in images:
        raise DataError(f"{where}: image_id {iid} is not in 'images'")
    if cid not in cat_index:
        raise DataError(
            f"{where}: category_id {cid} is not one of the categories {sorted(cat_index)}"
        )
    if ann.get("iscrowd", 0):
        return None
    _, w, h = images[iid]
    checked = check_box(_xyxy(ann.get("bbox"), where), w, h, where, warnings, hint=COCO_HINT)
    return iid, checked, cat_index[cid]


def _xyxy(bbox: Any, where: str) -> tuple[float, float, float, float]:
    """COCO ``[x, y, w, h]`` -> xyxy; DataError unless it is 4 numbers."""
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
    ):
        raise DataError(f"{where}: 'bbox' must be 4 numbers [x, y, w, h], got {bbox!r}")
    x, y, bw, bh = (float(v) for v in bbox)
    return x, y, x + bw, y + bh
