from __future__ import annotations

from pathlib import Path

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
    assert main(["data", "check", str(out), "--decode"]) == 0
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
