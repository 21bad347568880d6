"""Each kind of bad input gives the documented error or counted warning, naming file:line."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.data.coco import load_coco_split
from runtime.data.records import decode_image
from runtime.data.yolo import load_yolo_split
from runtime.errors import DataError

NAMES = ("a", "b")


def _image(path: Path, w: int = 64, h: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, dtype=np.uint8))


def _yolo(tmp_path: Path, labels: dict[str, str | None]) -> Path:
    """images/train/<stem>.jpg (64x48) with labels/train/<stem>.txt (None: no label file)."""
    images = tmp_path / "images" / "train"
    for stem, text in labels.items():
        _image(images / f"{stem}.jpg")
        if text is not None:
            label = tmp_path / "labels" / "train" / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(text)
    return images


def test_good_yolo_and_empty_label_file(tmp_path: Path) -> None:
    images = _yolo(tmp_path, {"x": "1 0.5 0.5 0.5 0.5\n\n0 0.25 0.25 0.25 0.5\n", "y": ""})
    split = load_yolo_split(images, NAMES)
    x, y = split.records
    np.testing.assert_allclose(x.boxes, [[16, 12, 48, 36], [8, 0, 24, 24]])
    assert x.classes.tolist() == [1, 0] and (x.width, x.height, x.image_id) == (64, 48, 1)
    assert y.num_objects == 0 and split.warnings == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n", r"x\.txt:2: expected 5 fields .* got 4"),
        ("0 0.5 0.5 0.2 0.2 0.3 0.3\n", r"x\.txt:1: expected 5 fields .*segment"),
        ("0 0.5 abc 0.2 0.2\n", r"x\.txt:1: field 'abc' is not a number"),
        ("0 0.5 nan 0.2 0.2\n", r"x\.txt:1: non-finite"),
        ("\n2 0.5 0.5 0.2 0.2\n", r"x\.txt:2: class id 2 out of range \[0, 2\)"),
        ("-1 0.5 0.5 0.2 0.2\n", r"x\.txt:1: class id -1 out of range"),
        ("0.5 0.5 0.5 0.2 0.2\n", r"x\.txt:1: class id '0\.5' is not an integer"),
        ("0 1.8 0.5 0.2 0.2\n", r"x\.txt:1: box .* lies outside the 64x48 image; YOLO coordinates"),
        ("0 32 24 10 10\n", r"x\.txt:1: box .* lies outside"),  # pixels instead of normalized
    ],
)
def test_bad_yolo_lines_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    images = _yolo(tmp_path, {"x": text})
    with pytest.raises(DataError, match=message):
        load_yolo_split(images, NAMES)


def test_missing_image_for_label_file(tmp_path: Path) -> None:
    images = _yolo(tmp_path, {"x": ""})
    (tmp_path / "labels" / "train" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=r"ghost\.txt: no image for this label file"):
        load_yolo_split(images, NAMES)


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    images = _yolo(tmp_path, {"x": ""})
    (images / "broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg" * 10)
    with pytest.raises(DataError, match=r"broken\.jpg: not a readable image"):
        load_yolo_split(images, NAMES)


def test_degenerate_and_clipped_boxes_warn_with_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = "0 0.5 0.5 0 0.1\n1 0.5 0.5 0.2 -0.1\n0 0.95 0.5 0.3 0.2\n1 0.5 0.5 0.2 0.2\n"
    images = _yolo(tmp_path, {"x": text, "y": None})
    with caplog.at_level(logging.WARNING):
        split = load_yolo_split(images, NAMES)
    x, y = split.records
    assert x.classes.tolist() == [0, 1] and y.num_objects == 0
    np.testing.assert_allclose(x.boxes[0], [51.2, 19.2, 64.0, 28.8], atol=1e-4)  # clipped
    joined = "\n".join(split.warnings)
    assert re.search(r"degenerate box .*: 2 time\(s\), first at .*x\.txt:1", joined)
    assert re.search(r"outside the image, clipped: 1 time\(s\), first at .*x\.txt:3", joined)
    assert re.search(r"without a label file .*: 1 time\(s\), first at .*y\.jpg", joined)
    assert len(caplog.records) == 3  # one warning per kind, not per line


# ---- COCO ---------------------------------------------------------------------------


def _coco(tmp_path: Path, anns: list[dict], images: list[dict] | None = None) -> Path:
    _image(tmp_path / "img" / "p.jpg")
    data = {
        "images": images or [{"id": 5, "file_name": "p.jpg", "width": 64, "height": 48}],
        "annotations": anns,
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def _ann(i: int, bbox: list, cat: int = 3, **extra) -> dict:
    return {"id": i, "image_id": 5, "category_id": cat, "bbox": bbox, **extra}


def test_good_coco_maps_categories_and_skips_crowd(tmp_path: Path) -> None:
    path = _coco(tmp_path, [_ann(1, [4, 4, 10, 20], 7), _ann(2, [0, 0, 30, 30], 3, iscrowd=1)])
    split = load_coco_split(path, tmp_path / "img")
    (r,) = split.records
    assert split.class_names == ("a", "b") and r.image_id == 5
    assert r.classes.tolist() == [1]
    np.testing.assert_allclose(r.boxes, [[4, 4, 14, 24]])


@pytest.mark.parametrize(
    ("anns", "message"),
    [
        ([_ann(9, [1, 1, 5, 5], cat=4)], r"annotations\[0\] \(id 9\): category_id 4 is not one"),
        ([_ann(1, [1, 1, 5])], r"annotations\[0\] \(id 1\): 'bbox' must be 4 numbers"),
        ([_ann(1, [1, "x", 5, 5])], r"annotations\[0\] \(id 1\): 'bbox' must be 4 numbers"),
        ([{"id": 1, "image_id": 6, "category_id": 3, "bbox": [1, 1, 2, 2]}], r"image_id 6"),
        ([_ann(1, [100, 100, 5, 5])], r"annotations\[0\] \(id 1\): box .* lies outside"),
    ],
)
def test_bad_coco_annotations_are_named(tmp_path: Path, anns: list, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_coco_split(_coco(tmp_path, anns), tmp_path / "img")


def test_coco_degenerate_and_clipped_boxes_warn(tmp_path: Path) -> None:
    path = _coco(
        tmp_path, [_ann(1, [3, 3, 0, 5]), _ann(2, [50, 40, 30, 30]), _ann(3, [1, 1, 2, 2])]
    )
    split = load_coco_split(path, tmp_path / "img")
    np.testing.assert_allclose(split.records[0].boxes, [[50, 40, 64, 48], [1, 1, 3, 3]])
    joined = "\n".join(split.warnings)
    assert "degenerate box" in joined and r"annotations[0] (id 1)" in joined
    assert "clipped: 1 time(s)" in joined and r"annotations[1] (id 2)" in joined


def test_coco_image_problems(tmp_path: Path) -> None:
    missing = [{"id": 1, "file_name": "nope.jpg", "width": 64, "height": 48}]
    with pytest.raises(DataError, match=r"nope\.jpg: image file not found"):
        load_coco_split(_coco(tmp_path, [], missing), tmp_path / "img")
    wrong = [{"id": 1, "file_name": "p.jpg", "width": 640, "height": 480}]
    with pytest.raises(DataError, match=r"images\[0\]: JSON size 640x480 but .*p\.jpg is 64x48"):
        load_coco_split(_coco(tmp_path, [], wrong), tmp_path / "img")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(DataError, match=r"bad\.json:2: not valid JSON"):
        load_coco_split(bad_json, tmp_path / "img")


# ---- damaged images, and skipping damage (--skip-bad) --------------------------------


def _truncate(path: Path) -> None:
    """Cut the end of the file (a plain 64x48 JPEG is mostly header: keep that whole)."""
    path.write_bytes(path.read_bytes()[:-10])


def test_truncated_and_empty_images_are_named_when_loading(tmp_path: Path) -> None:
    images = _yolo(tmp_path, {"x": "0 0.5 0.5 0.2 0.2\n"})
    _truncate(images / "x.jpg")
    with pytest.raises(DataError, match=r"x\.jpg: truncated or corrupt JPEG"):
        load_yolo_split(images, NAMES)
    with pytest.raises(DataError, match=r"x\.jpg: truncated or corrupt JPEG"):
        decode_image(images / "x.jpg")
    (images / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"x\.jpg: image file is empty"):
        load_yolo_split(images, NAMES)


def test_decode_image_refuses_a_jpeg_without_end_marker_even_if_it_decodes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.jpg"
    _image(path)
    path.write_bytes(path.read_bytes()[:-2])  # only the end-of-image marker is missing
    with pytest.raises(DataError, match="does not end with the end-of-image marker"):
        decode_image(path)


def test_yolo_skip_bad_leaves_out_damaged_images_and_names_each_problem(tmp_path: Path) -> None:
    labels = {
        "a": "0 0.5 0.5 0.2 0.2\n",
        "b": "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n7 0.5 0.5 0.1 0.1\n",  # lines 2 and 3 bad
        "c": "1 0.5 0.5 0.2 0.2\n",
        "d": "",
    }
    images = _yolo(tmp_path, labels)
    _truncate(images / "c.jpg")
    (images / "d.jpg").write_bytes(b"not an image at all")
    (tmp_path / "labels" / "train" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=r"ghost\.txt: no image"):  # without: the first stops
        load_yolo_split(images, NAMES)
    split = load_yolo_split(images, NAMES, skip_bad=True)
    assert [r.path.name for r in split.records] == ["a.jpg"]
    assert split.records[0].image_id == 1
    got = [(Path(s.file).name, s.line, s.image and Path(s.image).name) for s in split.skipped]
    assert got == [
        ("ghost.txt", None, None),
        ("b.txt", 2, "b.jpg"),
        ("b.txt", 3, "b.jpg"),
        ("c.jpg", None, "c.jpg"),
        ("d.jpg", None, "d.jpg"),
    ]
    assert "b.txt:3: class id 7 out of range" in split.skipped[2].problem
    assert "truncated" in split.skipped[3].problem


def test_coco_skip_bad_leaves_out_images_of_damaged_entries(tmp_path: Path) -> None:
    images = [
        {"id": 5, "file_name": "p.jpg", "width": 64, "height": 48},
        {"id": 6, "file_name": "q.jpg", "width": 64, "height": 48},
        {"id": 7, "file_name": "r.jpg", "width": 64, "height": 48},
    ]
    _image(tmp_path / "img" / "q.jpg")
    _image(tmp_path / "img" / "r.jpg")
    _truncate(tmp_path / "img" / "r.jpg")
    anns = [
        _ann(1, [4, 4, 10, 20]),
        {"id": 2, "image_id": 6, "category_id": 9, "bbox": [1, 1, 5, 5]},  # unknown category
        {"id": 3, "image_id": 6, "category_id": 3, "bbox": [1, 1, 5, 5]},
        {"id": 4, "image_id": 7, "category_id": 3, "bbox": [1, 1, 5, 5]},
        {"id": 5, "image_id": 99, "category_id": 3, "bbox": [1, 1, 5, 5]},  # unknown image
    ]
    path = _coco(tmp_path, anns, images)
    with pytest.raises(DataError, match=r"r\.jpg: truncated"):
        load_coco_split(path, tmp_path / "img")
    split = load_coco_split(path, tmp_path / "img", skip_bad=True)
    assert [r.image_id for r in split.records] == [5]
    got = [(Path(s.file).name, s.image and Path(s.image).name) for s in split.skipped]
    assert got == [("r.jpg", "r.jpg"), ("ann.json", "q.jpg"), ("ann.json", None)]
    assert r"annotations[1] (id 2): category_id 9" in split.skipped[1].problem
