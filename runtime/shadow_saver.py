"""Saving the frames where the student and the shadow teacher disagree, for the next
offline retraining round (``understudy serve --shadow-save-dir DIR --shadow-save-max-mb M``).

Each frame becomes ``shadow_<time_ns>_<seq>.jpg`` (the frame as the model saw it: the
decoded image, at the reduced size under ``--decode reduced``) and ``shadow_<...>.json``::

    {"image": "shadow_...jpg", "width": W, "height": H, "f1": 0.4, "iou_threshold": 0.5,
     "teacher_model": "teacher.onnx", "teacher_ms": 180.2, "true_positives": 1,
     "false_positives": 2, "false_negatives": 1,
     "student": [{"box": [x1, y1, x2, y2], "score": 0.8, "class_id": 0, "label": "person"}],
     "teacher": [...]}

Boxes are xyxy in the saved image's pixels. The folder's pairs stay under the cap: the
oldest pairs are deleted first (a rolling window of the most recent disagreements).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import ConfigError
from runtime.files import write_atomic
from runtime.frames import encode_image
from runtime.types import Detections


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
        self, image: np.ndarray, student: Detections, teacher: Detections, info: dict[str, Any]
    ) -> Path | None:
        """Write one frame; returns the JSON path, or None when the pair alone exceeds
        the cap. ``info`` goes into the JSON as is."""
        stem = f"shadow_{time.time_ns():020d}_{next(self._seq):06d}"
        jpeg = encode_image(image, "jpeg", quality=95)
        h, w = image.shape[:2]
        record = {
            "image": f"{stem}.jpg",
            "width": w,
            "height": h,
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
