"""benchmarks.adapt's own parts on tiny inputs: the site video, the rows and targets it
reads from an adapt report, and its results files (the full run trains models)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from benchmarks import adapt as bench


def _report(dep_site: float, ada_site: float, dep_orig: float, ada_orig: float) -> dict:
    def scores(site: float, orig: float) -> dict:
        return {
            "site": {"f1": 50.0, "map50_95": 30.0},
            "original": {"map50_95": orig, "map50": orig + 10},
            "site_labelled": {"map50_95": site, "map50": site + 10},
        }

    return {
        "scores": {"deployed": scores(dep_site, dep_orig), "adapted": scores(ada_site, ada_orig)}
    }


def test_rows_and_targets_from_an_adapt_report() -> None:
    rows = bench.student_rows(_report(20.0, 26.0, 40.0, 39.5))
    assert [r["model"] for r in rows] == ["deployed", "adapted"]
    t = bench.targets(rows, 600.0)
    assert t["site_gain_map50_95"] == 6.0 and t["site_gain_met"]
    assert t["original_lost_map50_95"] == 0.5 and t["original_met"] and t["time_met"]
    t = bench.targets(bench.student_rows(_report(20.0, 23.0, 40.0, 38.0)), 1300.0)
    assert not (t["site_gain_met"] or t["original_met"] or t["time_met"])


def test_site_video_holds_each_frame(tmp_path: Path) -> None:
    folder = tmp_path / "images" / "train"
    folder.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), np.full((32, 48, 3), 60 * (i + 1), np.uint8))
    video = bench.site_video(tmp_path, hold=2, fps=10.0)
    cap = cv2.VideoCapture(str(video))
    values = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        values.append(round(frame.mean() / 60))
    cap.release()
    assert values == [1, 1, 2, 2, 3, 3]


def test_results_files(tmp_path: Path) -> None:
    rows = [*bench.student_rows(_report(20.0, 26.0, 40.0, 39.5))]
    rows.append({"model": "teacher", "site_map50_95": 35.0, "original_map50_95": 55.0})
    args = argparse.Namespace(
        reduced=True, reduced_train=4, reduced_val=2, teacher_preset="small",
        teacher_epochs=1, student_epochs=1, site_train=3, site_val=2, hold=2, fps=10.0,
        below_f1=1.0, serve_threshold=0.25,
    )  # fmt: skip
    report = {"distill_config": {"img_size": 160, "model": "nano"}, "config": {"epochs": 2}}
    doc = {
        "command": "python -m benchmarks.adapt --reduced",
        "machine": "m",
        "date": "2026-11-30",
        "load_average_at_start": 1.0,
        "configuration": bench.configuration(args, "d", "t", "s", report),
        "shadow": {"saved": 3},
        "site_frames": {"train": 1, "stop": 1, "test": 1, "streams": 1},
        "gate": {"replace": True, "reasons": ["a", "b"]},
        "best_epoch": 2,
        "history": [{}, {}],
        "targets": bench.targets(rows, 100.0),
        "rows": rows,
    }
    md = bench.markdown(doc)
    assert "reduced: 4 original train / 2 val images" in md and "NOT the standard" in md
    assert "| adapted | 26.00 |" in md and "(target >= +5: met)" in md
    bench.plot(doc, tmp_path / "adapt.png")
    assert (tmp_path / "adapt.png").read_bytes()[:4] == b"\x89PNG"
    json.dumps(doc)


def test_shadow_frames_are_reused_only_from_the_same_run(tmp_path: Path) -> None:
    """A shadow folder is reused when its manifest names the same models, video and
    settings; frames of another run (e.g. the reduced configuration's) stop the benchmark
    with a message instead of being mixed in, and are not deleted."""
    import pytest

    student, teacher, video = (tmp_path / n for n in ("s.pt", "t.pt", "v.avi"))
    for i, path in enumerate((student, teacher, video)):
        path.write_bytes(bytes([i]) * 10)
    args = argparse.Namespace(below_f1=1.0, serve_threshold=0.25, fps=10.0)
    manifest = bench.shadow_manifest(student, teacher, video, args)
    save = tmp_path / "shadow"
    assert not bench.reusable_shadow(save, manifest)  # nothing there yet
    save.mkdir()
    (save / "manifest.json").write_text(json.dumps(manifest))
    (save / "shadow_1_000000.json").write_text("{}")
    assert bench.reusable_shadow(save, manifest)
    student.write_bytes(b"another student")
    other = bench.shadow_manifest(student, teacher, video, args)
    with pytest.raises(SystemExit, match="shadow frames of another run"):
        bench.reusable_shadow(save, other)
    (save / "manifest.json").unlink()  # frames without a manifest: not known to be ours
    with pytest.raises(SystemExit, match="move it away"):
        bench.reusable_shadow(save, manifest)
    assert (save / "shadow_1_000000.json").is_file()
