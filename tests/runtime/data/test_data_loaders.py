from __future__ import annotations

import contextlib
import io
import json
import logging
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


def test_yaml_rejects_bad_entries(tiny_synth: Path, tmp_path: Path) -> None:
    root = f"path: {tiny_synth}\n"
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
    with pytest.raises(DataError, match=r"images/nope: image directory not found"):
        load_split(_yaml(tmp_path, root + "names: [a]\nval: [images/val, images/nope]\n"), "val")
    with pytest.raises(DataError, match=r"nope\.txt: image list file not found"):
        load_split(_yaml(tmp_path, root + "names: [a]\nval: nope.txt\n"), "val")
    with pytest.raises(ConfigError, match="'val' must be an images folder"):
        load_split(_yaml(tmp_path, root + "names: [a]\nval: {x: 1}\n"), "val")


ULTRALYTICS_YAML = """\
# as Ultralytics ships them: keys this project does not read, class names as a mapping
path: {root}
train: {train}
val: {val}
names:
{names}
download: https://example.com/ds.zip
roboflow:
  workspace: w
  version: 1
"""


def _ultralytics(tmp_path: Path, root: Path, train: str, val: str = "images/val") -> Path:
    names = "\n".join(f"  {k}: {n}" for k, n in enumerate(CLASS_NAMES))
    return _yaml(tmp_path, ULTRALYTICS_YAML.format(root=root, train=train, val=val, names=names))


def test_ultralytics_yaml_extra_keys_are_warned_once_and_ignored(
    tiny_synth: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _ultralytics(tmp_path, tiny_synth, "images/train")
    with caplog.at_level(logging.WARNING):
        train, val = load_split(path, "train"), load_split(path, "val")
    _same_records(train, load_split(tiny_synth, "train"))
    assert len(val) == 4
    ignored = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert len(ignored) == 1 and "'download', 'roboflow'" in ignored[0]


def test_ultralytics_train_as_list_of_folders(tiny_synth: Path, tmp_path: Path) -> None:
    split = load_split(_ultralytics(tmp_path, tiny_synth, "[images/train, images/val]"), "train")
    both = load_split(tiny_synth, "train").records + load_split(tiny_synth, "val").records
    assert sorted(r.path for r in split.records) == sorted(r.path for r in both)
    assert [r.image_id for r in split.records] == list(range(1, 11))
    val_labels = {r.path: r.boxes for r in load_split(tiny_synth, "val").records}
    for r in split.records:  # labels found by the images -> labels rule, per image
        if r.path in val_labels:
            np.testing.assert_array_equal(r.boxes, val_labels[r.path])


def test_ultralytics_train_as_txt_list_of_images(tiny_synth: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(tiny_synth / "images", root / "images")
    shutil.copytree(tiny_synth / "labels", root / "labels")
    picked = ["000001.jpg", "000004.jpg"]
    lines = [f"./images/train/{picked[0]}", "", str(root / "images/train" / picked[1])]
    (root / "train.txt").write_text("\n".join(lines) + "\nnotes.md\n")
    yaml_dir = tmp_path / "configs"
    yaml_dir.mkdir()
    split = load_split(_ultralytics(yaml_dir, Path("../ds"), "train.txt"), "train")
    assert [r.path.name for r in split.records] == picked
    full = {r.path.name: r for r in load_split(tiny_synth, "train").records}
    for r in split.records:
        np.testing.assert_array_equal(r.boxes, full[r.path.name].boxes)
    assert any("not an image" in w and "train.txt:4" in w for w in split.warnings)


def test_roboflow_dotdot_paths_resolve_in_the_root(tiny_synth: Path, tmp_path: Path) -> None:
    # Roboflow exports: data.yaml in the dataset folder says 'train: ../train/images'
    root = tmp_path / "export"
    shutil.copytree(tiny_synth / "images" / "train", root / "train" / "images")
    shutil.copytree(tiny_synth / "labels" / "train", root / "train" / "labels")
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../train/images\nnc: 8\n"
        f"names: {list(CLASS_NAMES)}\nroboflow: {{workspace: w}}\n"
    )
    split = load_split(root, "train")
    assert split.records[0].path == root / "train" / "images" / "000000.jpg"
    original = load_split(tiny_synth, "train").records
    assert [r.path.name for r in split.records] == [r.path.name for r in original]
    for r, o in zip(split.records, original):
        np.testing.assert_array_equal(r.boxes, o.boxes)


def test_nc_alone_names_the_classes(tiny_synth: Path, tmp_path: Path) -> None:
    split = load_split(_yaml(tmp_path, f"path: {tiny_synth}\nnc: 8\nval: images/val\n"), "val")
    assert split.class_names == tuple(f"class_{k}" for k in range(8))


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
