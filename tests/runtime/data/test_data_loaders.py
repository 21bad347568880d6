from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from distill.data.synth_scene import CLASS_NAMES
from runtime.data.dataset import load_split, to_coco_dict
from runtime.errors import ConfigError, DataError


def _same_records(a, b) -> None:
    assert a.class_names == b.class_names == CLASS_NAMES
    assert len(a.records) == len(b.records) > 0
    for ra, rb in zip(a.records, b.records):
        assert ra.path.resolve() == rb.path.resolve()
        assert (ra.image_id, ra.width, ra.height) == (rb.image_id, rb.width, rb.height)
        np.testing.assert_array_equal(ra.classes, rb.classes)
        np.testing.assert_allclose(ra.boxes, rb.boxes, atol=1e-3)


@pytest.mark.parametrize("split", ["train", "val"])
def test_yolo_and_coco_give_identical_records(tiny_synth: Path, split: str) -> None:
    yolo = load_split(tiny_synth, split)  # directory -> data.yaml (format yolo)
    coco = load_split(tiny_synth / "coco.yaml", split)
    bare = load_split(tiny_synth / "annotations" / f"instances_{split}.json", split)
    _same_records(yolo, coco)
    _same_records(yolo, bare)
    assert yolo.warnings == coco.warnings == ()
    assert sum(r.num_objects for r in yolo.records) > 0
    assert yolo.class_counts().sum() == sum(r.num_objects for r in yolo.records)


def test_to_coco_dict_evaluates_ground_truth_as_perfect(tiny_synth: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    split = load_split(tiny_synth, "val")
    gt_dict = to_coco_dict(split)
    assert [c["id"] for c in gt_dict["categories"]] == list(range(1, 9))
    assert min(a["id"] for a in gt_dict["annotations"]) == 1
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dets = [
            {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0}
            for a in gt_dict["annotations"]
        ]  # fmt: skip
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "d.yaml"
    p.write_text(text)
    return p


def test_yaml_rejects_unknown_keys_and_bad_entries(tiny_synth: Path, tmp_path: Path) -> None:
    root = f"path: {tiny_synth}\n"
    with pytest.raises(ConfigError, match="'download'"):
        load_split(
            _yaml(tmp_path, root + "names: [a]\ntrain: images/train\ndownload: x\n"), "train"
        )
    with pytest.raises(ConfigError, match=r"'val\.labels'"):
        load_split(
            _yaml(
                tmp_path, root + "format: coco\nval: {annotations: a.json, images: x, labels: y}\n"
            ),
            "val",
        )
    with pytest.raises(ConfigError, match="'format'"):
        load_split(_yaml(tmp_path, root + "format: voc\nnames: [a]\nval: images/val\n"), "val")
    with pytest.raises(ConfigError, match="no 'train' entry"):
        load_split(_yaml(tmp_path, root + "names: [a]\nval: images/val\n"), "train")
    with pytest.raises(ConfigError, match="'nc'"):
        load_split(_yaml(tmp_path, root + "names: [a, b]\nnc: 3\nval: images/val\n"), "val")
    with pytest.raises(DataError, match="not found"):
        load_split(tmp_path / "nothing.yaml", "val")
    with pytest.raises(DataError, match=r"no data\.yaml"):
        load_split(tmp_path, "val")


def test_yaml_names_as_dict_and_path_key(tiny_synth: Path, tmp_path: Path) -> None:
    names = "{" + ", ".join(f"{k}: {n}" for k, n in enumerate(CLASS_NAMES)) + "}"
    split = load_split(
        _yaml(tmp_path, f"path: {tiny_synth}\nnames: {names}\nval: images/val\n"), "val"
    )
    assert split.class_names == CLASS_NAMES and len(split) == 4


def test_coco_names_must_match_categories(tiny_synth: Path, tmp_path: Path) -> None:
    text = (
        f"path: {tiny_synth}\nformat: coco\nnames: [a, b, c, d, e, f, g, h]\n"
        "val: {annotations: annotations/instances_val.json, images: images/val}\n"
    )
    with pytest.raises(DataError, match="category names"):
        load_split(_yaml(tmp_path, text), "val")


def test_bare_json_without_images_dir(tiny_synth: Path, tmp_path: Path) -> None:
    lone = tmp_path / "lone" / "instances_val.json"
    lone.parent.mkdir()
    shutil.copy(tiny_synth / "annotations/instances_val.json", lone)
    with pytest.raises(DataError, match="no images directory"):
        load_split(lone, "val")
    # the COCO 2017 layout: annotations/ and val/ side by side
    (tmp_path / "val").symlink_to(tiny_synth / "images" / "val")
    assert len(load_split(lone, "val")) == 4
    data = json.loads(lone.read_text())
    assert data["images"][0]["file_name"] == "000000.jpg"
