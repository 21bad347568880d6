"""perf_analyzer runs of the KServe benchmark (used by ``benchmarks.kserve`` only).

perf_analyzer ships inside the tritonclient 2.41.0 wheel (``bin/perf_analyzer``); it needs
libb64 and libcudart.so.12, which ``scripts/side_env/triton.sh --perf-analyzer`` adds to
``.side-envs/triton`` (``--print-ld-path`` gives the LD_LIBRARY_PATH).
"""

from __future__ import annotations

import base64
import csv
import json
import os
import shlex
import struct
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDE_ENV = ROOT / "scripts" / "side_env" / "triton.sh"
PERF_ANALYZER = ROOT / ".side-envs" / "triton" / "bin" / "perf_analyzer"
MODES = {"sync": [], "async": ["-a"], "streaming": ["--streaming"]}


def prepare_side_env() -> dict[str, str]:
    """Build what perf_analyzer needs (idempotent); its environment (LD_LIBRARY_PATH)."""
    subprocess.run(["bash", str(SIDE_ENV), "--perf-analyzer"], check=True)
    ld = subprocess.run(
        ["bash", str(SIDE_ENV), "--print-ld-path"], check=True, capture_output=True, text=True
    ).stdout.strip()
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (ld, env.get("LD_LIBRARY_PATH")) if p)
    return env


def image_input_data(jpeg: bytes, path: Path) -> Path:
    """perf_analyzer's --input-data for the detection model: IMAGE only (FRAME is optional
    and left out). For BYTES, perf_analyzer sends a ``b64`` entry as the tensor's raw
    contents, so it holds the 4-byte length prefix too."""
    raw = struct.pack("<I", len(jpeg)) + jpeg
    data = {"data": [{"IMAGE": {"b64": base64.b64encode(raw).decode(), "shape": [1]}}]}
    path.write_text(json.dumps(data))
    return path


def perf_command(
    model: str, target: str, mode: str, concurrency: int, interval_ms: int, extra: list[str]
) -> list[str]:
    return [
        str(PERF_ANALYZER),
        "-m",
        model,
        "-u",
        target,
        "-i",
        "grpc",
        *MODES[mode],
        "--concurrency-range",
        str(concurrency),
        "--measurement-interval",
        str(interval_ms),
        "--stability-percentage",
        "30",
        "--max-trials",
        "8",
        *extra,
    ]


def _ms(row: dict, key: str) -> float:
    return round(float(row[key]) / 1000.0, 3)


def run_perf(cmd: list[str], csv_path: Path, env: dict[str, str]) -> dict:
    """One perf_analyzer run (retried once if it fails): its CSV row as a result row."""
    full = [*cmd, "-f", str(csv_path)]
    for _attempt in range(2):
        result = subprocess.run(full, capture_output=True, text=True, env=env, timeout=600)
        if result.returncode == 0 and csv_path.is_file():
            break
    else:
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        return {"error": " | ".join(tail), "command": _shown(cmd)}
    with csv_path.open() as f:
        row = next(csv.DictReader(f))
    return {
        "throughput_fps": round(float(row["Inferences/Second"]), 2),
        "p50_ms": _ms(row, "p50 latency"),
        "p90_ms": _ms(row, "p90 latency"),
        "p99_ms": _ms(row, "p99 latency"),
        "server_queue_ms": _ms(row, "Server Queue"),
        "server_compute_input_ms": _ms(row, "Server Compute Input"),
        "server_compute_infer_ms": _ms(row, "Server Compute Infer"),
        "server_compute_output_ms": _ms(row, "Server Compute Output"),
        "network_server_ms": _ms(row, "Network+Server Send/Recv"),
        "command": _shown(cmd),
    }


def _shown(cmd: list[str]) -> str:
    """The command as a user types it (perf_analyzer by its path in the side env)."""
    return shlex.join([str(Path(cmd[0]).relative_to(ROOT)), *cmd[1:]])
