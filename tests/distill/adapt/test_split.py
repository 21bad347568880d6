"""Site frames: collected from shadow folders, image folders and videos in time order, and
held out by time (the latest frames of each stream), never interleaved."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from distill.adapt.sources import SiteFrame, collect, materialise
from distill.adapt.split import split_by_time
from runtime.errors import DataError
from runtime.shadow_saver import DisagreementSaver, FrameTag
from runtime.types import Detections

NAMES = ("a", "b")


def _image(v: int) -> np.ndarray:
    return np.full((24, 32, 3), v, np.uint8)


def _frames(stream: str, n: int, times: list[int] | None = None) -> list[SiteFrame]:
    return [SiteFrame(stream, i, times[i] if times else None) for i in range(n)]


def _check_no_interleaving(split) -> None:
    for stream in {f.stream for f in split.train + split.stop + split.test}:
        parts = [
            [f.sort_key for f in p if f.stream == stream]
            for p in (split.train, split.stop, split.test)
        ]
        for earlier, later in itertools.pairwise(parts):
            if earlier and later:
                assert max(earlier) < min(later)


def test_split_holds_out_the_latest_frames_of_every_stream() -> None:
    # stream "cam1" has times out of list order; "cam2" only file order
    times = [50, 10, 40, 20, 30, 90, 60, 80, 70, 100]
    frames = _frames("cam1", 10, times) + _frames("cam2", 20)
    split = split_by_time(frames, test_share=0.2, stop_share=0.1)
    assert split.counts() == {"train": 7 + 14, "stop": 1 + 2, "test": 2 + 4}
    _check_no_interleaving(split)
    cam1_test = sorted(f.time_ns for f in split.test if f.stream == "cam1")
    assert cam1_test == [90, 100]  # the latest by capture time, not the last in the list
    assert [f.order for f in split.test if f.stream == "cam2"] == [16, 17, 18, 19]
    assert [f.time_ns for f in split.stop if f.stream == "cam1"] == [80]


def test_split_gap_drops_frames_at_each_cut() -> None:
    split = split_by_time(_frames("v", 20), test_share=0.2, stop_share=0.2, gap=2)
    assert [f.order for f in split.test] == [16, 17, 18, 19]
    assert [f.order for f in split.stop] == [10, 11, 12, 13]
    assert [f.order for f in split.train] == list(range(8))


def test_split_is_not_random_and_refuses_too_few_frames() -> None:
    a = split_by_time(_frames("v", 12), 0.25, 0.0)
    b = split_by_time(list(reversed(_frames("v", 12))), 0.25, 0.0)
    assert [f.order for f in a.test] == [f.order for f in b.test] == [9, 10, 11]
    assert a.stop == []
    with pytest.raises(DataError, match="too few"):
        split_by_time(_frames("v", 2), 0.25, 0.25)  # a short stream only trains
    with pytest.raises(DataError, match="shares"):
        split_by_time(_frames("v", 10), 0.0, 0.1)


def test_collect_reads_shadow_folders_image_folders_and_videos(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    saver = DisagreementSaver(shadow, 10.0, NAMES)
    # saved out of capture order, from two cameras
    for v, (cam, t) in enumerate([("front", 300), ("rear", 100), ("front", 100), ("front", 200)]):
        saver.save(_image(v), Detections.empty(), Detections.empty(), {}, FrameTag(cam, v, t, t))
    images = tmp_path / "images"
    images.mkdir()
    for i in (2, 0, 1):
        cv2.imwrite(str(images / f"f{i}.png"), _image(10 + i))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for i in range(7):
        writer.write(_image(40 * i))
    writer.release()
    frames = collect([shadow, images, video], video_stride=3)
    streams = sorted({f.stream for f in frames})
    assert streams == sorted([f"{shadow}#front", f"{shadow}#rear", str(images), str(video)])
    front = sorted((f for f in frames if f.stream.endswith("#front")), key=lambda f: f.sort_key)
    assert [f.time_ns for f in front] == [100, 200, 300]
    assert [f.record.camera_id for f in front] == ["front"] * 3
    assert [f.path.name for f in frames if f.stream == str(images)] == [
        "f0.png",
        "f1.png",
        "f2.png",
    ]
    assert [f.order for f in frames if f.stream == str(video)] == [0, 3, 6]
    out = materialise(sorted(frames, key=lambda f: (f.stream, f.sort_key)), tmp_path / "m")
    assert [p.name for p in out] == [f"{k:06d}{p.suffix}" for k, p in enumerate(out)]
    assert all(p.is_file() for p in out)
    index = json.loads((tmp_path / "m" / "frames.json").read_text())
    assert len(index) == len(frames) == 3 + 1 + 3 + 3
    video_files = [tmp_path / "m" / r["file"] for r in index if r["source"] == str(video)]
    assert [int(cv2.imread(str(p))[0, 0, 0]) for p in video_files] == pytest.approx(
        [0, 120, 240], abs=12
    )


def test_collect_names_a_bad_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        collect([tmp_path / "nope"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="shadow folder, an image folder or a video"):
        collect([tmp_path / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no site frames"):
        collect([tmp_path / "empty"])
