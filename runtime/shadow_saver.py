"""Saving the frames where the student and the shadow teacher disagree, for the next
offline retraining round (``understudy serve --shadow-save-dir DIR --shadow-save-max-mb M``),
and reading them back (:func:`read_record`, used by ``understudy adapt``).

Each frame becomes ``shadow_<time_ns>_<seq>.jpg`` (the frame as the model saw it: the
decoded image, at the reduced size under ``--decode reduced``) and ``shadow_<...>.json``
(layout version 2)::

    {"version": 2, "image": "shadow_...jpg", "width": W, "height": H,
     "camera_id": "front", "frame_id": 41,
     "capture_time_ns": 1764480000123456789,   # the Frame's capture_time (client clock), or null
     "received_time_ns": 1764480000125000000,  # arrival on the server (server clock), or null
     "saved_time_ns": 1764480000310000000,     # when the pair was written (server clock)
     "f1": 0.4, "iou_threshold": 0.5, "teacher_model": "teacher.onnx", "teacher_ms": 180.2,
     "true_positives": 1, "false_positives": 2, "false_negatives": 1,
     "student": [{"box": [x1, y1, x2, y2], "score": 0.8, "class_id": 0, "label": "person"}],
     "teacher": [...]}

Boxes are xyxy in the saved image's pixels; ``student`` holds the served student's
detections (at the server's score threshold) and ``teacher`` the shadow teacher's, all of
them (the agreement's reference is those at or above ``--shadow-teacher-min-score``).
``camera_id`` is the Frame's free-text camera id ("" when the client sent none); the time
a frame was seen is its capture time when the client sent one, else its arrival.
Version 1 records (before capture time and camera id were kept) have no ``version``
key: :func:`read_record` reads both, taking their time from the file name.

The folder's pairs stay under the cap: the oldest pairs are deleted first (a rolling
window of the most recent disagreements).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import ConfigError, DataError
from runtime.files import write_atomic
from runtime.frames import encode_image
from runtime.types import Detections

LAYOUT_VERSION = 2


@dataclass(frozen=True)
class FrameTag:
    """Where and when a served frame was seen: the Frame's ``camera_id`` and ``frame_id``,
    its ``capture_time`` in ns since the epoch (client clock; None when not sent) and its
    arrival in ns (server clock)."""

    camera_id: str = ""
    frame_id: int = 0
    capture_time_ns: int | None = None
    received_time_ns: int | None = None


class DisagreementSaver:
    """Saves frames as ``shadow_<time_ns>_<seq>.jpg`` + ``.json`` (both detection sets,
    boxes xyxy in the saved image's pixels) under ``folder``, keeping the folder's saved
    pairs under ``max_mb``: the oldest pairs are deleted first (existing pairs count too,
    so a restart keeps the cap). Files are written to a temporary name and renamed."""

    def __init__(self, folder: str | Path, max_mb: float, class_names: Sequence[str]) -> None:
        if max_mb <= 0:
            raise ConfigError(f"--shadow-save-max-mb must be > 0, got {max_mb}")
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--shadow-save-dir {folder}: cannot create ({e.strerror})") from e
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.class_names = tuple(class_names)
        self._seq = itertools.count()
        self._pairs: deque[tuple[str, int]] = deque()  # (stem, bytes), oldest first
        stems: dict[str, int] = {}
        for path in self.folder.glob("shadow_*"):
            if path.suffix in (".jpg", ".json"):
                stems[path.stem] = stems.get(path.stem, 0) + path.stat().st_size
        self._pairs.extend(sorted(stems.items()))
        self.total_bytes = sum(size for _, size in self._pairs)
        self._evict()

    def save(
        self,
        image: np.ndarray,
        student: Detections,
        teacher: Detections,
        info: dict[str, Any],
        tag: FrameTag | None = None,
    ) -> Path | None:
        """Write one frame; returns the JSON path, or None when the pair alone exceeds
        the cap. ``info`` goes into the JSON as is; ``tag`` says where and when the frame
        was seen (see the module docstring; None: unknown)."""
        now = time.time_ns()
        stem = f"shadow_{now:020d}_{next(self._seq):06d}"
        jpeg = encode_image(image, "jpeg", quality=95)
        h, w = image.shape[:2]
        tag = tag or FrameTag()
        record = {
            "version": LAYOUT_VERSION,
            "image": f"{stem}.jpg",
            "width": w,
            "height": h,
            "camera_id": tag.camera_id,
            "frame_id": tag.frame_id,
            "capture_time_ns": tag.capture_time_ns,
            "received_time_ns": tag.received_time_ns,
            "saved_time_ns": now,
            **info,
            "student": self._rows(student),
            "teacher": self._rows(teacher),
        }
        text = json.dumps(record, indent=1).encode()
        size = len(jpeg) + len(text)
        if size > self.max_bytes:
            return None
        write_atomic(self.folder / f"{stem}.jpg", jpeg)
        write_atomic(self.folder / f"{stem}.json", text)
        self._pairs.append((stem, size))
        self.total_bytes += size
        self._evict()
        return self.folder / f"{stem}.json"

    def _rows(self, d: Detections) -> list[dict[str, Any]]:
        names = self.class_names
        return [
            {
                "box": [round(v, 2) for v in box],
                "score": round(s, 4),
                "class_id": c,
                "label": names[c] if 0 <= c < len(names) else "",
            }
            for box, s, c in zip(d.boxes.tolist(), d.scores.tolist(), d.class_ids.tolist())
        ]

    def _evict(self) -> None:
        while self.total_bytes > self.max_bytes and self._pairs:
            stem, size = self._pairs.popleft()
            for suffix in (".json", ".jpg"):
                with contextlib.suppress(FileNotFoundError):
                    (self.folder / f"{stem}{suffix}").unlink()
            self.total_bytes -= size


@dataclass(frozen=True)
class ShadowRecord:
    """One saved disagreement read back (either layout version): the image path, where
    and when it was seen (``time_ns``: capture time, else arrival, else saving time), and
    both detection sets (boxes (N, 4) xyxy in the image's pixels)."""

    image: Path
    camera_id: str
    frame_id: int
    time_ns: int
    capture_time_ns: int | None
    student: Detections
    teacher: Detections
    version: int
    info: dict[str, Any]


def _detections(rows: Any, where: str) -> Detections:
    if not isinstance(rows, list):
        raise DataError(f"{where}: must be a list of detections")
    if not rows:
        return Detections.empty()
    try:
        boxes = np.array([r["box"] for r in rows], np.float32).reshape(-1, 4)
        scores = np.array([r["score"] for r in rows], np.float32)
        classes = np.array([r["class_id"] for r in rows], np.int32)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(
            f"{where}: each detection needs box [x1, y1, x2, y2], score, class_id"
        ) from e
    return Detections(boxes, scores, classes)


def read_record(path: str | Path) -> ShadowRecord:
    """Read a saved ``shadow_*.json`` (layout version 1 or 2; see the module docstring).
    A damaged or foreign file is a DataError naming it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable shadow record ({e})") from e
    if not isinstance(record, dict) or "image" not in record:
        raise DataError(f"{path}: not a shadow record (no 'image' key)")
    version = int(record.get("version", 1))
    if version > LAYOUT_VERSION:
        raise DataError(
            f"{path}: shadow record version {version} is newer than this reader's "
            f"{LAYOUT_VERSION}; update understudy"
        )
    parts = path.stem.split("_")
    saved = record.get("saved_time_ns")
    if saved is None:
        saved = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    capture = record.get("capture_time_ns")
    seen = capture if capture else record.get("received_time_ns") or saved
    return ShadowRecord(
        image=path.parent / str(record["image"]),
        camera_id=str(record.get("camera_id", "")),
        frame_id=int(record.get("frame_id", 0)),
        time_ns=int(seen),
        capture_time_ns=int(capture) if capture else None,
        student=_detections(record.get("student", []), f"{path}: 'student'"),
        teacher=_detections(record.get("teacher", []), f"{path}: 'teacher'"),
        version=version,
        info=record,
    )
