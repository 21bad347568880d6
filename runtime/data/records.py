"""Plain record types shared by every dataset loader.

A loader (``yolo.py``, ``coco.py``) turns files on disk into a :class:`DatasetSplit`: a list
of :class:`ImageRecord` (one per image, boxes already validated and in original-image
pixels) plus the class names. Everything downstream (torch datasets, evaluation, the
``understudy data check`` report) reads only these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.errors import DataError
from runtime.frames import JPEG_MAGIC, JPEG_TAIL_BYTES, jpeg_complete

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image and its objects.

    Attributes:
        path: image file.
        boxes: (N, 4) float32 xyxy in original-image pixels, inside ``[0, width] x [0, height]``
            with positive width and height.
        classes: (N,) int64 class indices in ``[0, num_classes)``.
        image_id: integer id, unique within the split (COCO ``image_id``; YOLO: 1-based
            position in file-name order).
        width, height: original image size in pixels.
    """

    path: Path
    boxes: np.ndarray
    classes: np.ndarray
    image_id: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.boxes.dtype != np.float32 or self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(
                f"boxes must be (N, 4) float32, got {self.boxes.shape} {self.boxes.dtype}"
            )
        if self.classes.dtype != np.int64 or self.classes.shape != (self.boxes.shape[0],):
            raise ValueError(
                f"classes must be ({self.boxes.shape[0]},) int64, "
                f"got {self.classes.shape} {self.classes.dtype}"
            )

    @property
    def num_objects(self) -> int:
        return int(self.boxes.shape[0])


@dataclass(frozen=True, eq=False)
class DatasetSplit:
    """One split (train, val, ...) of a labelled dataset.

    Attributes:
        records: one :class:`ImageRecord` per image (images without objects included).
        class_names: class index -> name.
        source: what was loaded (file or directory), for messages.
        warnings: one line per kind of skipped/repaired input, each with a count and the
            first file:line where it happened (already logged once at load time).
        skipped: damaged inputs left out because the split was loaded with ``skip_bad``
            (see :class:`BadInputs`); empty otherwise.
    """

    records: list[ImageRecord]
    class_names: tuple[str, ...]
    source: str
    warnings: tuple[str, ...] = field(default=())
    skipped: tuple[Skipped, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def class_counts(self) -> np.ndarray:
        """(C,) int64 number of objects per class."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for r in self.records:
            counts += np.bincount(r.classes, minlength=self.num_classes)
        return counts


@dataclass(frozen=True)
class Skipped:
    """One damaged input left out under ``--skip-bad``.

    Attributes:
        file: the damaged file (an image, a label file, an annotation or image-list file).
        line: 1-based line of ``file`` at fault (label and image-list files), else None.
        problem: the one-line message that stops a run without ``--skip-bad``.
        image: the image left out because of it (None when no image is lost, e.g. a label
            file without an image).
    """

    file: str
    line: int | None
    problem: str
    image: str | None

    def to_dict(self) -> dict[str, str | int | None]:
        return {"file": self.file, "line": self.line, "problem": self.problem, "image": self.image}


class BadInputs:
    """What a loader does with a damaged input (an undecodable image, a bad label line):
    without ``skip_bad`` the first one stops the load with its one-line :class:`DataError`;
    with it each one is recorded once as a :class:`Skipped` and loading goes on."""

    def __init__(self, skip_bad: bool = False) -> None:
        self.skip_bad = skip_bad
        self.items: list[Skipped] = []

    def skip(
        self, error: DataError, file: Path | str, line: int | None = None, image: Path | None = None
    ) -> None:
        """Record ``error`` (about ``file``, ``line``; ``image`` is left out) or raise it."""
        if not self.skip_bad:
            raise error
        self.items.append(
            Skipped(str(file), line, str(error), None if image is None else str(image))
        )


class WarningCounter:
    """Collects repeatable problems: one warning per kind, with a count and first place."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._first: dict[str, str] = {}

    def add(self, kind: str, where: str) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self._first.setdefault(kind, where)

    def lines(self) -> tuple[str, ...]:
        return tuple(
            f"{kind}: {n} time(s), first at {self._first[kind]}" for kind, n in self._counts.items()
        )


def read_image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels. A JPEG must
    also end with its end-of-image marker (its last bytes are read): a truncated JPEG is
    refused here, before any training.

    Raises:
        DataError: the file is missing, empty, not a readable image, or a truncated JPEG.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            is_jpeg = im.format == "JPEG"
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file not found") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        if path.is_file() and path.stat().st_size == 0:
            raise DataError(f"{path}: image file is empty; replace or remove it") from e
        raise DataError(f"{path}: not a readable image ({e}); replace or remove it") from e
    if w <= 0 or h <= 0:
        raise DataError(f"{path}: image has size {w}x{h}")
    if is_jpeg:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - JPEG_TAIL_BYTES))
            if not jpeg_complete(f.read()):
                raise DataError(_TRUNCATED.format(path=path))
    return int(w), int(h)


_TRUNCATED = (
    "{path}: truncated or corrupt JPEG (it does not end with the end-of-image marker); "
    "replace or remove it"
)


def decode_image(path: Path, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB.

    Raises:
        DataError: the file is missing, empty, a truncated JPEG, cannot be decoded, or its
            size is not ``expect_hw``.
    """
    import cv2

    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file not found") from e
    if not data.size:
        raise DataError(f"{path}: image file is empty; replace or remove it")
    if data[:3].tobytes() == JPEG_MAGIC and not jpeg_complete(data.tobytes()[-JPEG_TAIL_BYTES:]):
        raise DataError(_TRUNCATED.format(path=path))  # libjpeg would fill the rest grey
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # pixels as stored, like labels
    img = cv2.imdecode(data, flags)
    if img is None:
        raise DataError(f"{path}: image cannot be decoded (corrupt or not an image); replace it")
    if expect_hw is not None and img.shape[:2] != tuple(expect_hw):
        raise DataError(
            f"{path}: decoded size {img.shape[1]}x{img.shape[0]} differs from the labelled size "
            f"{expect_hw[1]}x{expect_hw[0]}"
        )
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files inside ``folder`` (by suffix; in its sub-folders too if ``recursive``),
    sorted by path.

    Raises:
        DataError: the folder does not exist.
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: image directory not found")
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


CLIP_TOLERANCE_PX = 1.0


def check_box(
    box: tuple[float, float, float, float],
    width: int,
    height: int,
    where: str,
    warnings: WarningCounter,
    hint: str = "",
) -> tuple[float, float, float, float] | None:
    """Validate one xyxy box in original-image pixels; returns it clipped, or None to skip.

    Policy (the same for every format):
    - a non-finite coordinate: :class:`DataError` naming ``where``;
    - zero or negative width/height as annotated: skipped, counted warning;
    - a box with no overlap with the image: :class:`DataError` (usually the wrong
      coordinate convention, e.g. pixels where normalized values are expected);
    - a box reaching more than ``CLIP_TOLERANCE_PX`` outside the image: clipped, counted
      warning (less than that is rounding and clipped silently).
    """
    x1, y1, x2, y2 = box
    if not all(np.isfinite(v) for v in box):
        raise DataError(f"{where}: box has a non-finite coordinate {box}")
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        warnings.add("degenerate box (zero or negative width/height) skipped", where)
        return None
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
        raise DataError(
            f"{where}: box {[round(v, 2) for v in box]} lies outside the {width}x{height} image"
            + (f"; {hint}" if hint else "")
        )
    if max(cx1 - x1, cy1 - y1, x2 - cx2, y2 - cy2) > CLIP_TOLERANCE_PX:
        warnings.add("box extends outside the image, clipped", where)
    return cx1, cy1, cx2, cy2


def boxes_array(boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
    """List of xyxy tuples -> (N, 4) float32."""
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
