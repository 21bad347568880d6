from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.cli import main
from runtime.pipeline import Detector
from tests.runtime.tiny_models import scene


def write_video(path: Path, n: int = 5) -> list[np.ndarray]:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    assert writer.isOpened()
    frames = [scene(64, 96, seed=i) for i in range(n)]
    for f in frames:
        writer.write(f)
    writer.release()
    return frames


def read_json(out: Path) -> dict:
    return json.loads((out / "detections.json").read_text())


def test_detect_image(raw_model: Path, tmp_path: Path, capsys):
    image = tmp_path / "street.png"
    cv2.imwrite(str(image), scene(48, 80, seed=1))
    out = tmp_path / "out"
    assert main(["detect", str(image), "--model", str(raw_model), "--out", str(out)]) == 0
    annotated = cv2.imread(str(out / "street.png"))
    assert annotated.shape == (48, 80, 3)
    report = read_json(out)
    assert report["backend"] == "onnxruntime" and report["source_kind"] == "image"
    assert report["class_names"] == ["person", "car", "dog"]
    (frame,) = report["frames"]
    assert (frame["name"], frame["width"], frame["height"]) == ("street.png", 80, 48)
    assert len(frame["boxes"]) == len(frame["scores"]) == len(frame["class_ids"]) > 0
    boxes = np.array(frame["boxes"])
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 80 and boxes[:, [1, 3]].max() <= 48
    assert frame["class_names"] == [report["class_names"][c] for c in frame["class_ids"]]
    with Detector(raw_model) as det:
        dets, _ = det.detect(cv2.imread(str(image)))
    np.testing.assert_allclose(boxes, dets.boxes, atol=0.01)
    assert "median ms" in capsys.readouterr().out


def test_detect_folder(raw_model: Path, tmp_path: Path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(["b.jpg", "a.png", "c.bmp"]):
        cv2.imwrite(str(folder / name), scene(40 + i * 10, 60, seed=i))
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert (
        main(
            ["detect", str(folder), "--model", str(raw_model), "--out", str(out), "--max-det", "2"]
        )
        == 0
    )
    report = read_json(out)
    assert [f["name"] for f in report["frames"]] == ["a.png", "b.jpg", "c.bmp"]
    assert all(len(f["boxes"]) <= 2 for f in report["frames"])
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg", "c.bmp", "detections.json"]


def test_detect_video_pipelined_and_not(raw_model: Path, tmp_path: Path):
    video = tmp_path / "clip.mp4"
    write_video(video, 5)
    reports = []
    for extra in ([], ["--no-pipeline"]):
        out = tmp_path / f"out{len(reports)}"
        assert (
            main(["detect", str(video), "--model", str(raw_model), "--out", str(out), *extra]) == 0
        )
        result = cv2.VideoCapture(str(out / "clip_detections.mp4"))
        assert int(result.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
        result.release()
        reports.append(read_json(out))
    a, b = (r["frames"] for r in reports)
    assert [f["name"] for f in a] == [f"{i:06d}" for i in range(5)]
    assert [f["boxes"] for f in a] == [f["boxes"] for f in b]
    out = tmp_path / "short"
    assert (
        main(
            [
                "detect",
                str(video),
                "--model",
                str(raw_model),
                "--out",
                str(out),
                "--max-frames",
                "2",
            ]
        )
        == 0
    )
    assert len(read_json(out)["frames"]) == 2


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing.jpg", "no such file or folder"),
        ("broken.jpg", "cannot read this image"),
        ("notes.txt", "unknown file type '.txt'"),
        ("empty_dir", "folder holds no images"),
        ("99", "camera 99: cannot open"),
    ],
)
def test_bad_sources_are_one_line_errors(raw_model: Path, tmp_path: Path, capsys, source, message):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty_dir").mkdir()
    arg = source if source.isdigit() else str(tmp_path / source)
    assert main(["detect", arg, "--model", str(raw_model), "--out", str(tmp_path / "out")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("understudy detect: error:") and message in last


def test_bad_model_and_out_folder(raw_model: Path, tmp_path: Path, capsys):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), scene(32, 32))
    assert (
        main(
            [
                "detect",
                str(image),
                "--model",
                str(tmp_path / "none.onnx"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "model file not found" in capsys.readouterr().err
    assert main(["detect", str(image), "--model", str(raw_model), "--out", str(tmp_path)]) == 2
    assert "would overwrite" in capsys.readouterr().err
