"""benchmarks/ros.py's bookkeeping: joining arrivals with the bridge's trace, its counts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmarks.ros import latencies, stop_bridge
from benchmarks.ros_load import Arrivals
from runtime.frames import encode_image

MS = 1_000_000


def test_latency_parts_add_up(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    stamp = 1_000 * MS
    line = {
        "camera": "/cam0",
        "stamp_ns": stamp,
        "server_total_ms": 8.0,
        "offered_ns": stamp + 1 * MS,
        "answered_ns": stamp + 11 * MS,
        "published_ns": stamp + 11 * MS + MS // 2,
    }
    early = {**line, "stamp_ns": 10 * MS}
    trace.write_text("\n".join(json.dumps(x) for x in (line, early)) + "\n")
    arrivals = Arrivals([{stamp: stamp + 12 * MS, 10 * MS: 20 * MS, 5 * MS: 9 * MS}], [3])
    lat = latencies(arrivals, trace, ["/cam0"], since_ns=100 * MS)  # "early" is warm-up
    assert {k: [round(v, 6) for v in vs] for k, vs in lat.items()} == {
        "e2e": [12.0],
        "server": [8.0],
        "added": [4.0],
        "over_grpc": [2.0],
        "ros_in": [1.0],
        "grpc": [2.0],
        "publish": [0.5],
        "ros_out": [0.5],
    }


def test_bridge_counts_are_read_from_its_last_lines() -> None:
    log = (
        "INFO understudy.ros: /a: 10 received, 7 published, 3 dropped (bridge 1, server 2: "
        "budget_exceeded 2), 0 errors, 0 reconnects\n"
    )
    proc = subprocess.Popen(["printf", "%s", log], stdout=subprocess.PIPE, text=True)
    proc.wait()  # as the bridge does on SIGTERM: counts printed, then exit
    counts = stop_bridge(proc)
    assert counts == {
        "/a": {"received": 10, "published": 7, "dropped": 3, "bridge": 1, "server": 2}
    }


def test_a_bridge_without_counts_stops_the_benchmark() -> None:
    proc = subprocess.Popen(["printf", "boom"], stdout=subprocess.PIPE, text=True)
    proc.wait()
    with pytest.raises(SystemExit, match="boom"):
        stop_bridge(proc)


def test_direct_client_added_is_its_round_trip_less_the_server_time() -> None:
    from benchmarks.ros import direct_latencies
    from benchmarks.ros_load import DirectTimes

    warm = DirectTimes([5 * MS], [20 * MS], [10.0], 1)  # offered in the warm-up: left out
    a = DirectTimes([100 * MS, 200 * MS], [112 * MS, 211 * MS], [10.0, 9.5], 2)
    b = DirectTimes([150 * MS], [163 * MS], [12.0], 1)
    lat = direct_latencies([warm, a, b], since_ns=50 * MS)
    assert {k: [round(v, 6) for v in vs] for k, vs in lat.items()} == {
        "direct_server": [10.0, 9.5, 12.0],
        "direct_added": [2.0, 1.5, 1.0],
    }


def test_direct_clients_stream_to_a_server_like_the_bridge() -> None:
    from benchmarks.ros_load import drive_direct
    from tests.runtime.serving_fakes import FakeDetector, running

    frames = [encode_image(np.full((48, 64, 3), v, np.uint8), "jpeg", 90) for v in (1, 2)]
    with running(FakeDetector()) as (server, _):
        results = drive_direct(f"127.0.0.1:{server.port}", frames, 2, 20.0, 0.5)
    assert [r.sent for r in results] == [10, 10]
    for r in results:
        assert len(r.answered_ns) >= 1 and len(r.offered_ns) == len(r.answered_ns)
        assert all(a > o for o, a in zip(r.offered_ns, r.answered_ns))
        assert all(ms >= 0 for ms in r.server_ms)


def test_rows_keep_their_commands_and_a_rerun_replaces_its_row(tmp_path: Path) -> None:
    from benchmarks.ros import merge_rows, write_results

    def row(executor: str, command: str, added: float) -> dict:
        return {
            "input": "compressed",
            "streams": 1,
            "fps_per_stream": 30.0,
            "transport": "tcp",
            "executor": executor,
            "model": "m.onnx",
            "threads": None,
            "command": command,
            "date": "2026-11-30",
            "load_avg_start": 0.1,
            "added_p50_ms": added,
        }

    rows = merge_rows([], row("single", "cmd A", 3.0))
    rows = merge_rows(rows, row("events", "cmd B", 2.0))
    rows = merge_rows(rows, row("single", "cmd C", 2.5))  # the same settings as A: replaces it
    assert [(r["executor"], r["command"]) for r in rows] == [
        ("events", "cmd B"),
        ("single", "cmd C"),
    ]
    write_results(tmp_path, rows, "test machine")
    saved = json.loads((tmp_path / "ros.json").read_text())
    assert saved["machine"] == "test machine" and saved["rows"] == rows
    md = (tmp_path / "ros.md").read_text()
    assert "1. `cmd B` (2026-11-30, load 0.1)" in md and "2. `cmd C`" in md
    assert "| 2 | compressed | tcp | single |" in md  # run, input, transport, executor


def test_rows_name_the_bridge_version_they_ran(tmp_path: Path) -> None:
    from benchmarks.ros import bridge_version

    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    git("init", "-q")
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "x.py").write_text("a = 1\n")
    (tmp_path / "notes.md").write_text("notes\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    commit = git("rev-parse", "--short", "HEAD")
    assert bridge_version(tmp_path) == commit
    (tmp_path / "notes.md").write_text("edited\n")  # outside runtime/: the bridge is the same
    assert bridge_version(tmp_path) == commit
    (tmp_path / "runtime" / "x.py").write_text("a = 2\n")
    assert bridge_version(tmp_path) == commit + "+changes"
