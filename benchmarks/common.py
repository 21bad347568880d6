"""What the benchmarks share: the command line a result records, ``WIDTHxHEIGHT``
arguments, and the first frames of a video."""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
from pathlib import Path

import numpy as np

from runtime.errors import DataError


def command_line(name: str, argv: list[str] | None, python: str = "python") -> str:
    """How to run benchmark ``name`` again with ``argv`` (default: this process's
    arguments), e.g. ``python -m benchmarks.latency model.onnx --batch 1``; ``python``: the
    interpreter to name (e.g. a side environment's)."""
    args = sys.argv[1:] if argv is None else argv
    return shlex.join([python, "-m", f"benchmarks.{name}", *args])


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (640, 480): (width, height), for argparse ``type=``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 640x480, got {text!r}"
        ) from e
    return w, h


def video_frames(video: Path, n: int) -> list[np.ndarray]:
    """The first ``n`` frames of ``video`` (fewer if it is shorter): (H, W, 3) BGR uint8.
    Raises DataError when none can be read."""
    from runtime.commands.stream import open_source

    frames, _ = open_source(str(video))
    first = list(itertools.islice(frames, n))
    frames.close()  # releases the capture
    if not first:
        raise DataError(f"{video}: no frames could be read")
    return first
