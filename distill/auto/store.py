"""Resumable results of ``understudy auto``: one JSON file per finished piece of work
(a candidate's measurement, a teacher's proxy run, a final student's numbers), written
to a temp file and renamed into place, so an interrupted run never leaves half a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.files import write_atomic


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (values JSON lacks, such as paths, as
    their ``str``)."""
    return write_atomic(path, json.dumps(data, indent=1, default=str) + "\n")


def read_json(path: str | Path) -> Any | None:
    """The JSON stored at ``path``, or None when it is missing or unreadable (an
    unreadable piece is simply redone)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
