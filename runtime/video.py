"""Frame sources (image, folder of images, video file, camera) and annotated output.

A source yields ``(name, frame)`` pairs, frame (H, W, 3) BGR uint8. Opening checks the
source up front, so a bad path or an unreadable camera is one clear InputError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import ConfigError, InputError
from runtime.files import atomic_path
from runtime.types import Detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) BGR uint8, or InputError naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: cannot read this image (missing, corrupt or not an image)")
    return image


@dataclass
class FrameSource:
    """What ``open_source`` found: kind "image" | "folder" | "video" | "camera"."""

    kind: str
    description: str
    fps: float  # frames per second of a video/camera (0 for images)
    _images: Sequence[Path] = ()
    _capture: cv2.VideoCapture | None = None
    max_frames: int | None = None

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        """(name, (H, W, 3) BGR uint8) for each frame; names are file names or frame indices."""
        count = 0
        if self._capture is None:
            for path in self._images:
                if self.max_frames is not None and count >= self.max_frames:
                    return
                yield path.name, read_image(path)
                count += 1
            return
        try:
            while self.max_frames is None or count < self.max_frames:
                ok, frame = self._capture.read()
                if not ok:
                    return
                yield f"{count:06d}", frame
                count += 1
        finally:
            self.close()

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _open_capture(target: int | str, what: str) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        cap.release()
        raise InputError(f"{what}: cannot open it (no such camera, or an unsupported video)")
    return cap


def open_source(source: str, max_frames: int | None = None) -> FrameSource:
    """An image, a folder of images, a video file, or a camera index ("0")."""
    if source.isdigit() and not Path(source).exists():
        cap = _open_capture(int(source), f"camera {source}")
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        return FrameSource("camera", f"camera {source}", fps, _capture=cap, max_frames=max_frames)
    path = Path(source)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return FrameSource("folder", str(path), 0.0, _images=images, max_frames=max_frames)
    if not path.is_file():
        raise InputError(
            f"{path}: no such file or folder "
            "(SOURCE is an image, a folder, a video or a camera index)"
        )
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        read_image(path)  # fail now, not mid-run
        return FrameSource("image", str(path), 0.0, _images=[path], max_frames=max_frames)
    if suffix in VIDEO_SUFFIXES:
        cap = _open_capture(str(path), str(path))
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        return FrameSource("video", str(path), fps, _capture=cap, max_frames=max_frames)
    raise InputError(
        f"{path}: unknown file type {path.suffix!r}; images: {', '.join(IMAGE_SUFFIXES)}; "
        f"videos: {', '.join(VIDEO_SUFFIXES)}"
    )


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per class (golden-ratio hue steps)."""
    hue = int((class_id * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 200, 255]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_detections(image: np.ndarray, dets: Detections, class_names: Sequence[str]) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) BGR with boxes and "name score" labels drawn."""
    out = image.copy()
    thickness = max(1, round(min(out.shape[:2]) / 400))
    for box, score, cls in zip(dets.boxes, dets.scores, dets.class_ids):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        color = class_color(int(cls))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        name = class_names[cls] if 0 <= cls < len(class_names) else str(int(cls))
        label = f"{name} {float(score):.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        ty = max(y1, th + base)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw, ty), color, -1)
        cv2.putText(
            out, label, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA
        )
    return out


class VideoSink:
    """Writes frames to a video file, opened on the first frame: mp4v for ``.mp4``, MJPG
    otherwise (``.avi``). Frames of another size are resized to the first frame's. The
    file is written under a temp name and renamed into place by :meth:`close`."""

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        self.fps = fps if fps > 0 else 30.0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._file = contextlib.ExitStack()

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            self._size = (frame.shape[1], frame.shape[0])
            tmp = self._file.enter_context(atomic_path(self.path))
            codec = "mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"
            self._writer = cv2.VideoWriter(
                str(tmp), cv2.VideoWriter_fourcc(*codec), self.fps, self._size
            )
            if not self._writer.isOpened():
                self._writer = None
                with self._file:  # leaving with the error removes the temp file
                    raise ConfigError(f"{self.path}: cannot write a video there (use .mp4 or .avi)")
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size)
        self._writer.write(frame)

    def close(self) -> None:
        """Finish the file and move it into place (nothing is written without a frame)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            self._file.close()
