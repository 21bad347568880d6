"""benchmarks.stream: a real server in another process under two open-loop streams; rows
in the results format of benchmarks/README.md; --append replaces a row of the same settings."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from benchmarks import stream, stream_load
from benchmarks.stream_load import bench_frames

REQUIRED = (
    "streams",
    "fps_per_stream",
    "budget_ms",
    "delivered_fps",
    "drop_rate",
    "e2e_p50_ms",
    "e2e_p99_ms",
    "overhead_p50_ms",
    "budget_miss_rate",
    "server_rss_mb_start",
    "server_rss_mb_end",
)


def test_stream_benchmark_writes_and_replaces_rows(raw_model: Path, tmp_path: Path) -> None:
    argv = ["--model", str(raw_model), "--scenarios", "2x10", "--duration", "1.5"]
    argv += ["--size", "160x120", "--out-dir", str(tmp_path)]
    assert stream.main(argv) == 0
    doc = json.loads((tmp_path / "stream.json").read_text())
    assert set(doc) >= {"command", "machine", "date", "rows"}
    assert doc["command"].startswith("python -m benchmarks.stream --model ")
    (row,) = doc["rows"]
    assert all(k in row for k in REQUIRED)
    assert (row["streams"], row["fps_per_stream"], row["frame"]) == (2, 10.0, "160x120 jpeg")
    assert row["sent"] == 30 and row["answered"] + row["dropped"] == 30 and row["answered"] > 0
    assert row["stream_errors"] == [] and row["server_exit_code"] == 0
    assert row["server_rss_mb_start"] > 0 and row["server_rss_mb_end"] > 0
    # the per-stream view: one entry per camera, adding up to the row
    per = row["per_stream"]
    assert [p["stream"] for p in per] == [0, 1] and sum(p["sent"] for p in per) == 30
    assert sum(p["answered"] for p in per) == row["answered"]
    assert all(
        {"delivered_fps", "drop_rate", "late_rate", "server_late_rate"} <= set(p) for p in per
    )
    assert row["stream_fps_min"] == min(p["delivered_fps"] for p in per)
    assert row["stream_fps_max"] == max(p["delivered_fps"] for p in per)
    assert row["schedule"] is None and row["threads"] is None  # serve's defaults
    # the model worker's counters, from the line the server logs when it stops
    assert 0.0 < row["model_busy"] < 1.0 and row["holds"] >= 0 and row["held_s"] >= 0.0
    assert len(row["load_avg_start"]) == 3
    assert "| reduced |" in (tmp_path / "stream.md").read_text()
    # the same settings again with --append: one row, replaced; other settings add a row
    assert stream.main([*argv, "--append"]) == 0
    assert len(json.loads((tmp_path / "stream.json").read_text())["rows"]) == 1
    assert stream.main([*argv, "--append", "--decode", "full"]) == 0
    rows = json.loads((tmp_path / "stream.json").read_text())["rows"]
    assert sorted(r["decode"] for r in rows) == ["full", "reduced"]


def test_bench_frames_from_a_video_are_resized(tmp_path: Path) -> None:
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    frames = bench_frames(32, 24, video, n=5)  # a shorter video: its 3 frames
    assert len(frames) == 3
    assert cv2.imdecode(np.frombuffer(frames[0], np.uint8), cv2.IMREAD_COLOR).shape == (24, 32, 3)
    assert len(bench_frames(32, 24, None, n=4)) == 4


def test_cpu_load_runs_another_process_for_its_seconds() -> None:
    import os
    import time

    def children() -> set[int]:
        path = f"/proc/{os.getpid()}/task/{os.getpid()}/children"
        return {int(p) for p in Path(path).read_text().split()} if Path(path).exists() else set()

    before = children()
    with stream_load.cpu_load(0.3):
        (hog,) = children() - before
        assert Path(f"/proc/{hog}").exists()
        time.sleep(0.6)  # it stops by itself after its seconds
        assert hog not in children() or Path(f"/proc/{hog}/stat").read_text().split()[2] == "Z"
    assert children() == before
    with stream_load.cpu_load(0.0):
        assert children() == before


def test_load_view_splits_the_answers_at_the_load() -> None:
    res = stream_load.StreamResult()
    t0 = 100.0
    res.stats.answered_at = [t0 + 0.5 * k for k in range(20)]  # 2 per second for 10 s
    view = stream.load_view([res], t0, 10.0, 2.0)
    assert view["cpu_load_s"] == 2.0
    assert view["delivered_fps_during_load"] == 2.0  # t < 2 s: 4 answers
    after = 2.0 + stream.RECOVERY_S
    assert view["delivered_fps_after_load"] == round(
        sum(k * 0.5 >= after for k in range(20)) / (10.0 - after), 2
    )
    assert stream.load_view([res], t0, 10.0, 0.0) == {"cpu_load_s": None}


def test_median_run_is_the_row_and_every_run_is_kept() -> None:
    runs = [
        {"delivered_fps": fps, "server_budget_miss_rate": 0.01 * k, "model_busy": 0.5}
        for k, fps in enumerate((50.0, 12.0, 41.0))
    ]
    row = stream.median_run(runs)
    assert row["delivered_fps"] == 41.0 and row["server_budget_miss_rate"] == 0.02
    assert row["repeats"] == 3 and row["delivered_fps_runs"] == [50.0, 12.0, 41.0]
    assert row["server_budget_miss_rate_runs"] == [0.0, 0.01, 0.02]
    assert stream.median_run(runs[:2])["delivered_fps"] == 12.0  # the lower of two


def test_raw_frames_and_a_note(raw_model: Path, tmp_path: Path) -> None:
    argv = ["--model", str(raw_model), "--scenarios", "1x10", "--duration", "1.0"]
    argv += ["--size", "160x120", "--out-dir", str(tmp_path), "--encode", "raw"]
    assert stream.main([*argv, "--note", "what this file is"]) == 0
    doc = json.loads((tmp_path / "stream.json").read_text())
    (row,) = doc["rows"]
    assert row["encode"] == "raw" and row["answered"] > 0 and row["errors"] == 0
    assert doc["note"] == "what this file is"
    assert (tmp_path / "stream.md").read_text().splitlines()[2] == "what this file is"
    assert stream.main([*argv, "--append", "--encode", "jpeg"]) == 0  # the note is kept
    doc = json.loads((tmp_path / "stream.json").read_text())
    assert doc["note"] == "what this file is"
    assert sorted(r["encode"] for r in doc["rows"]) == ["jpeg", "raw"]
