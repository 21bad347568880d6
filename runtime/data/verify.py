"""Decode every image of a split, and the report of what ``--skip-bad`` left out.

Loading a split reads only image headers (and a JPEG's last bytes); a file can still fail
to decode. :func:`undecodable` decodes every image in a thread pool (OpenCV releases the
GIL) with a progress bar: ``understudy data check`` reports each failure, and runs with
``--skip-bad`` call :func:`drop_undecodable` before training or evaluating, so a damaged
image is left out up front instead of stopping the run.

The report (``skipped.json``): ``{"data": ..., "skipped": N, "images_left_out": M,
"items": [{"split", "file", "line", "problem", "image"}, ...]}``, one item per damaged
input (``line``: 1-based line of a label or image-list file, else null; ``image``: the image
left out because of it, or null).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from runtime.data.records import DatasetSplit, ImageRecord, Skipped, decode_image
from runtime.errors import DataError
from runtime.files import write_json_atomic

log = logging.getLogger(__name__)

SKIP_REPORT = "skipped.json"


def undecodable(
    records: Sequence[ImageRecord], progress: bool = True, desc: str = "decode"
) -> list[tuple[ImageRecord, DataError]]:
    """Decode every record's image (in parallel); the failures, in record order.

    A failure is what :func:`runtime.data.records.decode_image` refuses: a missing, empty
    or undecodable file, a truncated JPEG, or a size other than the record's.
    """

    def one(r: ImageRecord) -> DataError | None:
        try:
            decode_image(r.path, expect_hw=(r.height, r.width))
        except DataError as e:
            return e
        return None

    threads = max(1, min(16, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:
        results = list(
            tqdm(
                pool.map(one, records),
                total=len(records),
                desc=desc,
                disable=None if progress else True,  # None: only on a terminal
                leave=False,
                dynamic_ncols=True,
            )
        )
    return [(r, e) for r, e in zip(records, results) if e is not None]


def drop_undecodable(split: DatasetSplit, skip_bad: bool, progress: bool = True) -> DatasetSplit:
    """``split`` without the images that do not decode, each recorded in ``skipped``.

    Raises:
        DataError: the first image that does not decode, unless ``skip_bad``.
    """
    failed = undecodable(split.records, progress, desc=f"decode {Path(split.source).name}")
    if not failed:
        return split
    if not skip_bad:
        raise failed[0][1]
    gone = {id(r) for r, _ in failed}
    added = tuple(Skipped(str(r.path), None, str(e), str(r.path)) for r, e in failed)
    return replace(
        split,
        records=[r for r in split.records if id(r) not in gone],
        skipped=split.skipped + added,
    )


def report_beside(data: str | Path) -> Path:
    """Where a command without an output folder (``data check``, ``eval``) writes its
    report: beside the dataset file, named after it (``data.yaml`` -> ``data.skipped.json``;
    a folder means its ``data.yaml``), or in the working directory where the dataset's
    folder is read-only."""
    p = Path(data)
    if p.is_dir():
        p = p / "data.yaml"
    name = f"{p.stem}.{SKIP_REPORT}"
    return p.with_name(name) if os.access(p.parent, os.W_OK) else Path.cwd() / name


def skip_summary(splits: Mapping[str, Sequence[Skipped]]) -> str:
    """ "N damaged input(s) skipped (M image(s) left out)"."""
    items = [s for sk in splits.values() for s in sk]
    images = {s.image for s in items if s.image is not None}
    return f"{len(items)} damaged input(s) skipped ({len(images)} image(s) left out)"


def report_summary(path: str | Path) -> str:
    """The :func:`skip_summary` line of a written report, and where it is."""
    import json

    report = json.loads(Path(path).read_text())
    return (
        f"{report['skipped']} damaged input(s) skipped ({report['images_left_out']} image(s) "
        f"left out); listed in {path}"
    )


def log_skipped(splits: Mapping[str, Sequence[Skipped]]) -> None:
    """One warning per damaged input (its one-line problem), then the summary."""
    for name, items in splits.items():
        for s in items:
            log.warning("%s: skipped: %s", name, s.problem)
    log.info("%s", skip_summary(splits))


def write_skip_report(
    path: str | Path, data: str | Path, splits: Mapping[str, Sequence[Skipped]]
) -> Path:
    """Write the report (see the module docstring) of ``splits`` (name -> skipped)."""
    items = [{"split": name, **s.to_dict()} for name, sk in splits.items() for s in sk]
    images = {i["image"] for i in items if i["image"] is not None}
    report = {
        "data": str(data),
        "skipped": len(items),
        "images_left_out": len(images),
        "items": items,
    }
    return write_json_atomic(path, report)
