"""Site frames: what a vehicle saw, from shadow folders, video files and image folders.

A source is

- a **shadow folder** (``serve --shadow-save-dir``; any folder holding ``shadow_*.json``):
  each record's image, camera id and time (capture time, else arrival, else saving; see
  :mod:`runtime.shadow_saver`); one stream per camera id;
- a **video file** (:data:`runtime.video.VIDEO_SUFFIXES`): every ``video_stride``-th
  frame, in frame order; one stream;
- an **image folder**: its images in file-name order (camera frames are usually named by
  time); one stream.

Frames of one stream are in time order: :mod:`distill.adapt.split` holds out the latest.
:func:`materialise` writes the frames of a split into a folder of JPEGs named in that
order (what :class:`distill.data.torch_dataset.UnlabelledFrames` reads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.data.records import list_images
from runtime.errors import DataError
from runtime.files import write_atomic, write_json_atomic
from runtime.shadow_saver import ShadowRecord, read_record
from runtime.video import VIDEO_SUFFIXES, open_source


@dataclass(frozen=True)
class SiteFrame:
    """One site frame: its ``stream`` (source, plus camera id for shadow folders), its
    ``order`` in that stream's source (file position or video frame index), its time in ns
    when known (shadow records), and where its pixels are (an image ``path``, or the
    ``video`` file and frame ``order``). ``record``: the shadow record, if any."""

    stream: str
    order: int
    time_ns: int | None
    path: Path | None = None
    video: Path | None = None
    record: ShadowRecord | None = None

    @property
    def sort_key(self) -> tuple[int, int]:
        return (self.time_ns if self.time_ns is not None else 0, self.order)


def _shadow_frames(folder: Path) -> list[SiteFrame]:
    records = sorted(folder.glob("shadow_*.json"))
    out = []
    for i, path in enumerate(records):
        rec = read_record(path)
        if not rec.image.is_file():
            raise DataError(f"{path}: its image {rec.image.name} is missing")
        stream = f"{folder}#{rec.camera_id}" if rec.camera_id else str(folder)
        out.append(SiteFrame(stream, i, rec.time_ns, path=rec.image, record=rec))
    return out


def _video_frames(path: Path, stride: int) -> list[SiteFrame]:
    source = open_source(str(path))
    try:
        n = sum(1 for _ in source.frames())
    finally:
        source.close()
    if n == 0:
        raise DataError(f"{path}: no frames could be read")
    return [SiteFrame(str(path), i, None, video=path) for i in range(0, n, stride)]


def collect(sources: Sequence[str | Path], video_stride: int = 10) -> list[SiteFrame]:
    """All frames of ``sources`` (see the module docstring), source by source.

    Raises DataError naming a source that is missing, empty or of an unknown kind."""
    if video_stride < 1:
        raise DataError(f"video stride must be >= 1, got {video_stride}")
    frames: list[SiteFrame] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            if any(path.glob("shadow_*.json")):
                found = _shadow_frames(path)
            else:
                images = list_images(path)
                found = [SiteFrame(str(path), i, None, path=p) for i, p in enumerate(images)]
        elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            found = _video_frames(path, video_stride)
        elif path.exists():
            raise DataError(
                f"{path}: a site source is a shadow folder, an image folder or a video "
                f"({', '.join(VIDEO_SUFFIXES)})"
            )
        else:
            raise DataError(f"{path}: site source not found")
        if not found:
            raise DataError(f"{path}: holds no site frames (no images or shadow records)")
        frames += found
    return frames


def materialise(frames: Sequence[SiteFrame], folder: str | Path) -> list[Path]:
    """Write ``frames`` as ``folder/000000.jpg`` … in the given order (images copied as
    they are, video frames encoded as JPEG) and ``folder/frames.json`` (where each came
    from); returns the image paths."""
    from runtime.frames import encode_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    index = []
    wanted: dict[Path, dict[int, int]] = {}  # video -> frame index -> position
    for k, f in enumerate(frames):
        if f.video is not None:
            wanted.setdefault(f.video, {})[f.order] = k
            paths.append(folder / f"{k:06d}.jpg")
        else:
            assert f.path is not None
            target = folder / f"{k:06d}{f.path.suffix.lower()}"
            write_atomic(target, f.path.read_bytes())
            paths.append(target)
        index.append(
            {
                "file": paths[-1].name,
                "stream": f.stream,
                "order": f.order,
                "time_ns": f.time_ns,
                "source": str(f.path or f.video),
            }
        )
    for video, positions in wanted.items():
        source = open_source(str(video))
        try:
            for i, (_, image) in enumerate(source.frames()):
                if i in positions:
                    write_atomic(paths[positions[i]], encode_image(image, "jpeg", quality=95))
        finally:
            source.close()
    write_json_atomic(folder / "frames.json", index)
    return paths
