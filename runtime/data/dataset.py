"""Find and load a dataset split from whatever the user points at.

``load_split(data, split)`` accepts:

1. a dataset YAML file::

       format: yolo            # or coco; default yolo (an Ultralytics data.yaml works)
       path: .                 # optional root, relative to the YAML's folder
       names: [disc, ring]     # class names (list, or {0: disc, 1: ring}); optional for coco
       nc: 2                   # optional; must equal len(names) (alone: names class_0...)
       train: images/train     # yolo: an images folder relative to the root, a .txt list
                               # of image paths, or a list of those (as Ultralytics reads it)
       val:                    # coco: annotation file + images directory, relative to root
         annotations: annotations/instances_val.json
         images: images/val

   Keys read: format, path, names, nc, train, val, test. Other top-level keys (an
   Ultralytics ``download:``, a Roboflow ``roboflow:``) are logged once and ignored; an
   unknown sub-key of a coco split entry is a :class:`ConfigError` naming it. A yolo entry
   ``../x`` that does not exist is looked up as ``x`` in the root, as Ultralytics does (the
   ``train: ../train/images`` of Roboflow exports).
2. a directory holding ``data.yaml`` (as written by ``understudy data synth``);
3. a COCO JSON file: the annotations of ``split``; its images directory is the first
   existing one of ``<json dir>/../images/<split>``, ``<json dir>/../<split>``,
   ``<json dir>/<split>`` and ``<json dir>/images`` (covers the synth layout and the
   ``annotations/`` + ``val2017/`` layout of COCO itself).

``to_coco_dict(split)`` turns any loaded split into COCO ground truth for pycocotools:
image ids are ``record.image_id``; **category id = class index + 1**; annotation ids
start at 1 (pycocotools treats id 0 as "unmatched"); ``iscrowd`` is 0.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from runtime.data.coco import load_coco_split
from runtime.data.records import DatasetSplit
from runtime.data.yolo import load_yolo_split
from runtime.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DATA_KEYS = ("format", "path", "names", "nc", "train", "val", "test")
SPLIT_KEYS = ("train", "val", "test")
COCO_SPLIT_KEYS = ("annotations", "images")


def load_split(data: str | Path, split: str, skip_bad: bool = False) -> DatasetSplit:
    """Load split ``split`` ("train", "val", "test") of the dataset at ``data``.

    With ``skip_bad``, damaged images and label lines (or COCO entries) are recorded in the
    split's ``skipped`` and their images left out, instead of stopping at the first one.

    Raises:
        DataError: the path or the data it names is missing or malformed.
        ConfigError: the dataset YAML has a bad value or a bad coco sub-key.
    """
    p = Path(data)
    if p.is_dir():
        yaml_path = p / "data.yaml"
        if not yaml_path.is_file():
            raise DataError(
                f"{p}: directory has no data.yaml; pass a dataset YAML or a COCO JSON file"
            )
        return _load_from_yaml(yaml_path, split, skip_bad)
    if not p.exists():
        raise DataError(f"{p}: dataset not found")
    if p.suffix.lower() == ".json":
        return load_coco_split(p, coco_images_dir(p, split), source=str(p), skip_bad=skip_bad)
    if p.suffix.lower() in (".yaml", ".yml"):
        return _load_from_yaml(p, split, skip_bad)
    raise DataError(f"{p}: expected a dataset YAML, a directory with data.yaml, or a COCO JSON")


def coco_images_dir(json_path: Path, split: str) -> Path:
    """Images directory for a bare COCO JSON (see the module docstring for the order)."""
    here = json_path.parent
    candidates = [
        here.parent / "images" / split,
        here.parent / split,
        here / split,
        here / "images",
    ]
    for c in candidates:
        if c.is_dir():
            return c
    raise DataError(
        f"{json_path}: no images directory found (looked for "
        + ", ".join(str(c) for c in candidates)
        + "); write a dataset YAML with the split's 'images' key"
    )


def read_data_yaml(path: Path) -> dict[str, Any]:
    """Parse a dataset YAML: the keys this project reads (values are checked when a split
    is loaded); other keys are logged once and dropped, as Ultralytics ignores them."""
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping with 'names', 'train', 'val'")
    ignored = tuple(str(k) for k in cfg if k not in DATA_KEYS)
    if ignored:
        _warn_ignored(str(path), ignored)
        cfg = {k: v for k, v in cfg.items() if k in DATA_KEYS}
    fmt = cfg.get("format", "yolo")
    if fmt not in ("yolo", "coco"):
        raise ConfigError(f"{path}: 'format' must be 'yolo' or 'coco', got {fmt!r}")
    cfg["format"] = fmt
    return cfg


@cache  # once per file and process, however many splits are loaded from it
def _warn_ignored(path: str, keys: tuple[str, ...]) -> None:
    log.warning(
        "%s: ignoring key(s) %s (not read here; the keys read are %s)",
        path,
        ", ".join(repr(k) for k in keys),
        ", ".join(DATA_KEYS),
    )


def parse_names(value: Any, path: Path) -> tuple[str, ...]:
    """``names`` as a list, or a dict with keys 0..C-1 -> tuple of class names."""
    if isinstance(value, list) and value:
        return tuple(str(n) for n in value)
    if isinstance(value, dict) and value:
        keys = sorted(value)
        if keys != list(range(len(keys))):
            raise ConfigError(f"{path}: 'names' keys must be 0..{len(keys) - 1}, got {keys}")
        return tuple(str(value[k]) for k in keys)
    raise ConfigError(f"{path}: 'names' must be a non-empty list of class names")


def _load_from_yaml(path: Path, split: str, skip_bad: bool) -> DatasetSplit:
    cfg = read_data_yaml(path)
    root = path.parent / str(cfg.get("path", "."))
    names = parse_names(cfg["names"], path) if "names" in cfg else None
    if names is not None and "nc" in cfg and cfg["nc"] != len(names):
        raise ConfigError(f"{path}: 'nc' is {cfg['nc']} but 'names' lists {len(names)} classes")
    if names is None and isinstance(cfg.get("nc"), int) and cfg["nc"] > 0:
        names = tuple(f"class_{k}" for k in range(cfg["nc"]))  # as Ultralytics names them
    if split not in SPLIT_KEYS:
        raise ConfigError(f"split {split!r} is not one of {SPLIT_KEYS}")
    if split not in cfg:
        raise ConfigError(f"{path}: no {split!r} entry; add '{split}:' naming the split's data")
    entry = cfg[split]
    source = f"{path} [{split}]"
    if cfg["format"] == "yolo":
        if names is None:
            raise ConfigError(f"{path}: 'names' is required for format yolo")
        images = yolo_entry_paths(entry, root, path, split)
        return load_yolo_split(images, names, source=source, skip_bad=skip_bad)
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{path}: {split!r} must be a mapping with 'annotations' and 'images' (format coco)"
        )
    for key in entry:
        if key not in COCO_SPLIT_KEYS:
            raise ConfigError(f"{path}: unknown key '{split}.{key}' (allowed: annotations, images)")
    for key in COCO_SPLIT_KEYS:
        if not isinstance(entry.get(key), str):
            raise ConfigError(f"{path}: '{split}.{key}' must be a path")
    return load_coco_split(
        root / entry["annotations"], root / entry["images"], names, source, skip_bad
    )


def yolo_entry_paths(entry: Any, root: Path, path: Path, split: str) -> list[Path]:
    """The folders and ``.txt`` image lists named by a yolo split entry (a string or a
    list of strings), relative to ``root``; ``../x`` that does not exist falls back to
    ``x`` in the root, as Ultralytics resolves it."""
    items = entry if isinstance(entry, list) else [entry]
    if not items or not all(isinstance(e, str) and e for e in items):
        raise ConfigError(
            f"{path}: {split!r} must be an images folder, a .txt list of image paths, or a "
            "list of those (format yolo)"
        )
    out = []
    for item in items:
        p = root / item
        if not p.exists() and item.startswith("../") and (root / item[3:]).exists():
            p = root / item[3:]
        out.append(p)
    return out


def to_coco_dict(split: DatasetSplit) -> dict[str, Any]:
    """COCO ground truth for ``split``: bbox ``[x, y, w, h]`` in original-image pixels,
    category id = class index + 1, image id = ``record.image_id``, annotation ids from 1."""
    images, annotations = [], []
    for r in split.records:
        images.append(
            {"id": r.image_id, "file_name": str(r.path), "width": r.width, "height": r.height}
        )
        for box, cls in zip(r.boxes.tolist(), r.classes.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": r.image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(split.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}
