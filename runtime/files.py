"""Writes that matter, done atomically: a temp file beside the target, renamed into place.

A crash (or a full disk) mid-write leaves the old file, or none, never half of one. The
one helper for every checkpoint, engine, report, sidecar and saved frame in the project:

- :func:`write_atomic` for bytes or text already in memory;
- :func:`atomic_path` for writers that want a file name (``torch.save``, ``cv2.imwrite``,
  ``savefig``, a video writer): write to the path it yields; it is renamed on success and
  removed on failure;
- :func:`ensure_writable` to fail in one line before minutes of work, not after.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runtime.errors import UnderstudyError


def _temp_name(path: Path) -> Path:
    """A hidden sibling of ``path`` with the same suffix (writers that pick a format by
    suffix, such as cv2.imwrite and savefig, still see ``.jpg`` / ``.png``)."""
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file or a folder) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on a clean exit rename it onto ``path``.

    The parent folder is created. On an exception the temp file is removed and the
    exception propagates; an OSError of the rename becomes a one-line UnderstudyError.
    With ``fsync`` the temp file is flushed to the disk before the rename and the folder
    after it, so that a power cut or a killed machine leaves the old file or the complete
    new one (checkpoints that a restarted job resumes from).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync(path.parent)
    except OSError as e:
        raise UnderstudyError(f"{path}: cannot write ({e.strerror or e})") from e
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes | str, fsync: bool = False) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; returns ``path``.
    ``fsync``: see :func:`atomic_path`."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_path(path, fsync) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 1) -> Path:
    """``obj`` as JSON (plus a final newline), written atomically."""
    return write_atomic(path, json.dumps(obj, indent=indent) + "\n")


def save_figure(fig: Any, path: str | Path, dpi: int | None = None) -> Path:
    """Save a matplotlib figure atomically (the PNG of a report or benchmark), creating
    the folder, and close it (also when saving fails)."""
    import matplotlib.pyplot as plt

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return Path(path)


def ensure_writable(path: str | Path) -> None:
    """Raise a one-line UnderstudyError naming ``path`` unless a file can be written there."""
    path = Path(path)
    if path.is_dir():
        raise UnderstudyError(f"{path}: is a directory; pass an output file name")
    probe = path.with_name(f".{path.name}.probe{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UnderstudyError(
            f"{path}: cannot write the output file ({e.strerror or e}); choose a writable path"
        ) from e
