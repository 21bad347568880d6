"""The README's quick tour runs as written: every command of its bash block, in order, in a
fresh folder, each step reading what the earlier ones wrote.

Only the configs are swapped for tiny stand-ins at the same paths (``configs/*.yaml``),
made from the real files with a few keys changed, so a renamed or removed key in a real
config breaks this test too. The server's port is a free one instead of 50051."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(900)

# config file -> keys changed for the tiny run (everything else as in the real file)
TINY = {
    "synth_standard.yaml": {
        "train": 12,
        "val": 6,
        "unlabelled": 6,
        "video_frames": 6,
        "video_width": 320,
        "video_height": 240,
    },
    "bench_teacher.yaml": {
        "model": "small",
        "img_size": 64,
        "epochs": 1,
        "batch_size": 4,
        "eval_every": 1,
        "bf16": "off",
    },
    "bench_distill.yaml": {
        "img_size": 64,
        "epochs": 1,
        "batch_size": 4,
        "eval_every": 1,
        "bf16": "off",
    },
    "budget_standard.yaml": {
        "latency": {"p50_ms": 10_000.0, "p99_ms": 10_000.0, "batch": 1, "input": 256},
        "min_speedup": 0.01,
        "min_accuracy_retention": 0.01,
    },
    "auto_grid.yaml": {
        "widths": [0.125],
        "depths": [0.33],
        "inputs": [256],
        "warmup": 1,
        "runs": 3,
        "frame_width": 160,
        "frame_height": 120,
        "calibration_batches": 1,
    },
}


def tour_commands() -> list[str]:
    """The README's quick-tour commands, continuation lines joined, comments removed."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick tour\n.*?```bash\n(.*?)```", readme, re.S)
    assert block, "README.md has no bash block under '## Quick tour'"
    text = block.group(1).replace("\\\n", " ")
    commands = [line.split(" #")[0].strip() for line in text.splitlines()]
    return [c for c in commands if c]


def tiny_configs(folder: Path) -> None:
    folder.mkdir()
    for name, changes in TINY.items():
        real = yaml.safe_load((ROOT / "configs" / name).read_text())
        unknown = set(changes) - set(real)
        assert not unknown, f"configs/{name} has no keys {unknown}: update this test"
        (folder / name).write_text(yaml.safe_dump({**real, **changes}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_exit(command: str) -> tuple[int, ...]:
    if command.startswith("understudy compile") and "--check" not in command:
        return (2,)  # no TensorRT here: one line saying so (the tour marks it "on the Jetson")
    if command.startswith(("understudy bench", "understudy auto")):
        return (0, 1)  # a gate that fails exits 1, by design
    return (0,)


def wait_for(process: subprocess.Popen, text: str, timeout: float) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        line = process.stdout.readline()
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"server never printed {text!r}:\n{seen}")


def test_quick_tour_runs_as_written(tmp_path: Path) -> None:
    commands = tour_commands()
    assert len(commands) >= 15 and all(c.startswith("understudy ") for c in commands)
    tiny_configs(tmp_path / "configs")
    port = str(free_port())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    cli = [sys.executable, "-m", "runtime.cli"]
    server = None
    try:
        for command in commands:
            args = shlex.split(command.replace("50051", port))[1:]
            if args[-1] == "&":
                server = subprocess.Popen(
                    [*cli, *args[:-1], "--port", port],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                wait_for(server, "understudy serve: ready", 300)
                continue
            run = subprocess.run(
                [*cli, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
            )
            assert run.returncode in expected_exit(command), (
                f"{command}\nexit {run.returncode}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
            )
            if run.returncode == 2:
                assert "TensorRT" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    assert server is not None and server.returncode == 0  # stopped cleanly on SIGTERM
    for made in (
        "runs/student/model.pt",
        "student.int8.onnx",
        "teacher.onnx",
        "runs/detect",
        "budget.json",
        "runs/auto/report.md",
    ):
        found = list(tmp_path.rglob(Path(made).name))
        assert found, f"the tour wrote no {made}"
