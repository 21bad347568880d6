from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from distill.data.synth import generate, render_scene
from distill.data.synth_config import SynthConfig, load_synth_config
from distill.data.synth_scene import CLASS_NAMES
from runtime.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[3]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix != ".mp4" and p.suffix != ".avi"
    }


def test_same_seed_gives_identical_files(
    tiny_synth: Path, tiny_config: SynthConfig, tmp_path: Path
) -> None:
    again = generate(tmp_path / "again", seed=7, config=tiny_config)
    a, b = _files(tiny_synth), _files(again)
    assert sorted(a) == sorted(b)
    assert any(k.startswith("labels/train/") for k in a)
    assert any(k.startswith("unlabelled/") for k in a)
    for k in a:
        assert a[k] == b[k], k


def test_other_seed_differs(tiny_synth: Path, tiny_config: SynthConfig, tmp_path: Path) -> None:
    cfg = replace(tiny_config, video_frames=0)
    other = generate(tmp_path / "other", seed=8, config=cfg)
    a = (tiny_synth / "labels/train/000000.txt").read_text()
    assert a != (other / "labels/train/000000.txt").read_text()
    assert not list(other.glob("video.*"))


def test_layout_and_metadata(tiny_synth: Path) -> None:
    assert len(list((tiny_synth / "images/train").glob("*.jpg"))) == 6
    assert len(list((tiny_synth / "labels/val").glob("*.txt"))) == 4
    assert len(list((tiny_synth / "unlabelled").glob("*.jpg"))) == 3
    meta = json.loads((tiny_synth / "synth.json").read_text())
    assert meta["seed"] == 7 and meta["class_names"] == list(CLASS_NAMES)
    assert meta["config"]["train"] == 6 and meta["counts"]["val"]["images"] == 4
    coco = json.loads((tiny_synth / "annotations/instances_train.json").read_text())
    assert sum(meta["counts"]["train"]["per_class"].values()) == len(coco["annotations"])
    assert [c["id"] for c in coco["categories"]] == list(range(1, 9))


def test_video_reads_back(tiny_synth: Path) -> None:
    (video,) = list(tiny_synth.glob("video.*"))
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 5 and frames[0].shape == (120, 160, 3)
    assert not np.array_equal(frames[0], frames[4])  # objects move


def test_scenes_have_small_and_large_objects_inside_the_image() -> None:
    cfg = SynthConfig()
    sizes, classes = [], []
    for i in range(12):
        img, boxes, cls = render_scene(np.random.default_rng([1, 0, i]), cfg, 320, 240)
        assert img.shape == (240, 320, 3) and img.dtype == np.uint8
        assert (
            np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= 320) and np.all(boxes[:, 3] <= 240)
        )
        assert np.all(boxes[:, 2:] > boxes[:, :2])
        assert np.array_equal(boxes, np.round(boxes))  # integer pixel boxes
        sizes.append(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
        classes.append(cls)
    sizes = np.concatenate(sizes)
    assert (sizes <= 16).sum() >= 5 and (sizes >= 60).sum() >= 3
    assert len(set(np.concatenate(classes).tolist())) >= 6


def test_existing_output_reused_only_when_same(tiny_synth: Path, tiny_config: SynthConfig) -> None:
    assert generate(tiny_synth, seed=7, config=tiny_config) == tiny_synth
    with pytest.raises(DataError, match="already exists"):
        generate(tiny_synth, seed=9, config=tiny_config)


def test_config_files_and_unknown_keys(tmp_path: Path) -> None:
    assert load_synth_config(REPO / "configs/synth_standard.yaml") == SynthConfig()
    demo = load_synth_config(REPO / "configs/synth_demo.yaml")
    assert (demo.train, demo.val, demo.unlabelled, demo.video_frames) == (300, 100, 200, 90)
    assert load_synth_config(None, {"train": 5, "val": None}).train == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: 10\nnum_train: 5\n")
    with pytest.raises(ConfigError, match="num_train"):
        load_synth_config(bad)
    with pytest.raises(ConfigError, match="min_size"):
        SynthConfig(min_size=0)
    with pytest.raises(ConfigError, match="'train' must be an integer"):
        SynthConfig(train=10.5)
    assert SynthConfig(min_size=8) == SynthConfig() and isinstance(
        SynthConfig(min_size=8).min_size, float
    )
