"""The synth generator's site shift: seeded, off by default, recorded in synth.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distill.data.synth import generate, render_scene
from distill.data.synth_config import SynthConfig
from distill.data.synth_shift import SiteShift, apply_cast, tiles
from runtime.errors import ConfigError, DataError

CFG = SynthConfig(train=2, val=1, unlabelled=1, video_frames=2, video_width=64, video_height=48)


def _scene(shift: SiteShift | None, seed: int = 5):
    return render_scene(np.random.default_rng([seed, 0, 0]), CFG, 96, 64, shift)


def test_no_shift_changes_nothing() -> None:
    base = _scene(None)
    for a, b in zip(base, _scene(SiteShift())):
        np.testing.assert_array_equal(a, b)


def test_colour_cast_is_a_per_channel_gain() -> None:
    shift = SiteShift(cast=(1.3, 1.0, 0.5))
    image, boxes, classes = _scene(shift)
    plain, plain_boxes, plain_classes = _scene(None)
    np.testing.assert_array_equal(image, apply_cast(plain, shift))
    np.testing.assert_array_equal(boxes, plain_boxes)
    np.testing.assert_array_equal(classes, plain_classes)  # same scene, other light
    assert image[..., 2].mean() < 0.6 * plain[..., 2].mean() + 1


def test_tiles_are_a_new_seeded_background_family() -> None:
    a = tiles(np.random.default_rng(1), 64, 96)
    np.testing.assert_array_equal(a, tiles(np.random.default_rng(1), 64, 96))
    assert not np.array_equal(a, tiles(np.random.default_rng(2), 64, 96))
    # grout lines: some rows are much darker than the tile faces
    rows = a.mean(axis=(1, 2))
    assert rows.min() < 0.7 * np.median(rows)
    image, boxes, _ = _scene(SiteShift(background="tiles"))
    again, boxes2, _ = _scene(SiteShift(background="tiles"))
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(boxes, boxes2)
    assert not np.array_equal(image, _scene(None)[0])


def test_generate_records_the_shift_and_reuses_only_the_same(tmp_path: Path) -> None:
    shift = SiteShift("tiles", (1.2, 1.0, 0.7))
    out = generate(tmp_path / "site", 3, CFG, shift)
    meta = json.loads((out / "synth.json").read_text())
    assert meta["shift"] == {"background": "tiles", "cast": [1.2, 1.0, 0.7]}
    assert generate(tmp_path / "site", 3, CFG, shift) == out
    with pytest.raises(DataError, match="already exists"):
        generate(tmp_path / "site", 3, CFG, SiteShift("tiles"))
    with pytest.raises(DataError, match="already exists"):
        generate(tmp_path / "site", 3, CFG)
    plain = generate(tmp_path / "plain", 3, CFG)
    assert "shift" not in json.loads((plain / "synth.json").read_text())
    a = (out / "images" / "train" / "000000.jpg").read_bytes()
    assert a != (plain / "images" / "train" / "000000.jpg").read_bytes()


def test_bad_shifts_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="background"):
        SiteShift(background="carpet")
    with pytest.raises(ConfigError, match="cast"):
        SiteShift(cast=(1.0, 0.0, 1.0))
