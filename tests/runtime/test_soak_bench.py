"""benchmarks.soak: a real server in another process, two streams reconnecting every
0.6 s for 2 s; the result files and their fields (not the timings)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import soak
from benchmarks.soak_report import TARGETS


def test_soak_writes_its_files_and_fields(raw_model: Path, tmp_path: Path) -> None:
    argv = ["--model", str(raw_model), "--streams", "2", "--fps", "10", "--duration", "2"]
    argv += ["--session-s", "0.6", "--sample-s", "0.2", "--size", "160x120"]
    argv += ["--out-dir", str(tmp_path), "--warmup-s", "0.5"]
    assert soak.main(argv) == 0
    doc = json.loads((tmp_path / "soak.json").read_text())
    assert set(doc) >= {"command", "machine", "date", "rows", "samples"}
    assert doc["command"].startswith("python -m benchmarks.soak --model ")
    (row,) = doc["rows"]
    assert row["streams"] == 2 and row["fps_per_stream"] == 10.0
    assert row["sessions"] >= 4  # each stream reconnected
    assert {s["stream"] for s in row["per_stream"]} == {0, 1}
    assert row["answered"] == sum(s["answered"] for s in row["per_stream"]) > 0
    assert row["errors"] == 0 and row["health_end"] == "SERVING" and row["server_exit_code"] == 0
    assert row["sessions_over_1s_without_answers"] == 0  # no session is over 1 s here
    assert [t["check"] for t in row["targets"]] == [c for c, _, _ in TARGETS]
    assert all(set(t) == {"check", "value", "limit", "passed"} for t in row["targets"])
    for key in ("rss_mb_warm", "rss_mb_end", "threads_end", "fds_end", "late_rate_server"):
        assert row[key] is not None, key
    assert len(row["load_avg_start"]) == 3 and len(row["load_avg_end"]) == 3
    # the model worker's counters, from the line the server logs when it stops
    assert 0.0 < row["model_busy"] < 1.0 and row["holds"] >= 0 and row["held_s"] >= 0.0
    assert len(doc["samples"]) >= 3
    assert all({"t_s", "rss_mb", "threads", "fds"} <= set(s) for s in doc["samples"])
    md = (tmp_path / "soak.md").read_text()
    assert "| fairness_ratio |" in md and "load average" in md
    assert (tmp_path / "soak.png").read_bytes()[:4] == b"\x89PNG"
