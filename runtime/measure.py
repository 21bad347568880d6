"""Shared measurement helpers for benchmarks and the budget gate (torch-free)."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

import cv2
import numpy as np

SIMD_FLAGS = (  # /proc/cpuinfo flag -> name in results, in the order they are listed
    ("avx2", "AVX2"),
    ("avx512f", "AVX-512"),
    ("avx512_vnni", "VNNI"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx512_bf16", "BF16"),
    ("amx_tile", "AMX"),
)


def _cpuinfo() -> tuple[str | None, set[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; (None, set()) elsewhere."""
    name, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name is None:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return name, flags


def cpu_flags() -> set[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    return _cpuinfo()[1]


def simd_level(flags: set[str]) -> str:
    """The vector extensions that decide int8/bf16 speed, e.g. "AVX2 AVX-512 VNNI BF16"."""
    found = [label for flag, label in SIMD_FLAGS if flag in flags]
    return " ".join(found) if found else "no AVX2"


def machine() -> str:
    """CPU model, core count, SIMD level, OS and ONNX Runtime version of this machine."""
    name, flags = _cpuinfo()
    cpu = name or platform.processor() or platform.machine()
    simd = f", {simd_level(flags)}" if flags else ""
    try:
        import onnxruntime

        ort = f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        ort = ""
    return f"{cpu}, {os.cpu_count()} cores{simd}, {platform.system()}{ort}"


def today() -> str:
    return datetime.date.today().isoformat()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q))


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident memory of a process in MiB (Linux /proc); None where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def synthetic_frames(width: int, height: int, n: int = 32, seed: int = 0) -> list[np.ndarray]:
    """(height, width, 3) BGR uint8 frames: dark noise with random filled rectangles and
    circles, a stand-in camera stream when no video is given."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        img = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        for _ in range(6):
            color = tuple(int(c) for c in rng.integers(60, 256, 3))
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            size = int(rng.integers(10, max(11, min(width, height) // 3)))
            if rng.random() < 0.5:
                cv2.rectangle(img, (x, y), (x + size, y + size // 2 + 5), color, -1)
            else:
                cv2.circle(img, (x, y), size // 2, color, -1)
        frames.append(img)
    return frames


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    """Markdown table lines for ``rows`` with (key, header) columns; floats to 2 decimals."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [r.get(k, "") for k, _ in columns]
        lines.append(
            "| " + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c) for c in cells) + " |"
        )
    return lines
