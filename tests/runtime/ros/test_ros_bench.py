"""benchmarks/ros.py's bookkeeping: joining arrivals with the bridge's trace, its counts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks.ros import latencies, stop_bridge
from benchmarks.ros_load import Arrivals

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
