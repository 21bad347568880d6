from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest

from runtime.cli import main


def test_synth_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("video_width: 96\nvideo_height: 64\n")
    out = tmp_path / "ds"
    args = ["data", "synth", "--out", str(out), "--seed", "2", "--config", str(cfg)]
    rc = main([*args, "--train", "2", "--val", "2", "--unlabelled", "1", "--video-frames", "2"])
    assert rc == 0
    assert "train 2, val 2, unlabelled 1, video 2 frames" in capsys.readouterr().out
    assert len(list((out / "images" / "val").iterdir())) == 2
    assert main(["data", "check", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train: 2 images" in text and "val: 2 images" in text and "trapezoid" in text
    assert "all 2 images decode" in text
    assert main(["data", "check", str(out / "annotations" / "instances_val.json")]) == 0
    assert capsys.readouterr().out.startswith("val: 2 images")


def test_bad_data_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val" / "x.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (tmp_path / "data.yaml").write_text("names: [a]\ntrain: images/val\nval: images/val\n")
    assert main(["data", "check", str(tmp_path), "--split", "val"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("understudy data: error:") and "no images found" in err
    assert len(err.splitlines()) == 1


def test_unknown_synth_config_key_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("trian: 5\n")
    assert main(["data", "synth", "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "unknown key 'trian'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _damaged_copy(tiny_synth: Path, tmp_path: Path) -> Path:
    """tiny_synth with a truncated JPEG (train 000001), a truncated PNG in place of train
    000002 (its header reads, its pixels do not) and a bad label line (val 000003.txt:2)."""
    ds = tmp_path / "ds"
    shutil.copytree(tiny_synth, ds, ignore=shutil.ignore_patterns("unlabelled", "video*"))
    jpg = ds / "images" / "train" / "000001.jpg"
    jpg.write_bytes(jpg.read_bytes()[:-300])
    other = ds / "images" / "train" / "000002.jpg"
    png = cv2.imencode(".png", cv2.imread(str(other)))[1].tobytes()
    other.unlink()
    other.with_suffix(".png").write_bytes(png[: len(png) // 2])
    label = ds / "labels" / "val" / "000003.txt"
    lines = label.read_text().splitlines()
    label.write_text("\n".join([lines[0], "3 0.5 0.5 0.1", *lines[1:]]) + "\n")
    return ds


def test_check_names_undecodable_images_one_line_each(
    tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = _damaged_copy(tiny_synth, tmp_path)
    for flags in ([], ["--no-decode"]):  # a truncated JPEG is found from its last bytes
        assert main(["data", "check", str(ds), "--split", "train", *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "000001.jpg: truncated or corrupt JPEG" in err[0]
    (ds / "images" / "train" / "000001.jpg").unlink()  # the truncated PNG only decodes wrong
    (ds / "labels" / "train" / "000001.txt").unlink()
    assert main(["data", "check", str(ds), "--split", "train", "--no-decode"]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(ds), "--split", "train"]) == 2
    captured = capsys.readouterr()
    assert "1 of 5 images do not decode" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("understudy data: error: ")
    assert "000002.png: image cannot be decoded" in err[0]


def test_check_skip_bad_lists_each_damaged_input_in_a_report(
    tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = _damaged_copy(tiny_synth, tmp_path)
    assert main(["data", "check", str(ds)]) == 2  # without --skip-bad: the first stops
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "000001.jpg: truncated" in err[0]
    assert main(["data", "check", str(ds), "--skip-bad"]) == 0
    out = capsys.readouterr().out
    report = ds / "data.skipped.json"
    assert f"3 damaged input(s) skipped (3 image(s) left out); listed in {report}" in out
    assert "train: 4 images" in out and "val: 3 images" in out
    assert out.count("skipped: ") == 3 and "000003.txt:2: expected 5 fields" in out
    items = json.loads(report.read_text())["items"]
    assert [(i["split"], Path(i["file"]).name, i["line"]) for i in items] == [
        ("train", "000001.jpg", None),
        ("train", "000002.png", None),
        ("val", "000003.txt", 2),
    ]
    assert Path(items[2]["image"]).name == "000003.jpg"
