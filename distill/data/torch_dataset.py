"""torch datasets over a loaded :class:`DatasetSplit`, and a folder of unlabelled frames.

Sample layout (both datasets): image (3, S, S) float32 RGB in [0, 1], letterboxed (see
``distill.data.transforms``); :class:`FrameMeta` maps network pixels back to the original
image: ``original = (net - pad) / scale``.

Randomness: sample ``i`` in epoch ``e`` uses ``numpy.random.default_rng([seed, e, i])``,
so results do not depend on the number of workers or their order. Call
:meth:`DetectionDataset.set_epoch` before each epoch (with ``persistent_workers=False``,
the default, workers see the new epoch).

``skip_bad``: a sample whose image fails to decode is ``None`` (with a warning) instead of
a :class:`DataError` that would end the DataLoader worker; :func:`collate` and
:func:`collate_frames` leave it out of the batch. (Runs with ``--skip-bad`` decode every
image before training, so this only catches files damaged while a run reads them.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from distill.data.transforms import AugmentConfig, Sample, boxes_to_net, letterbox, train_sample
from runtime.data.records import (
    BadInputs,
    DatasetSplit,
    Skipped,
    decode_image,
    list_images,
    read_image_size,
)
from runtime.errors import DataError
from runtime.preprocess import Letterbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameMeta:
    """Where a network-input image came from.

    Attributes:
        image_id: the record's image id (unlabelled frames: 1-based position).
        orig_hw: original (height, width).
        scale, pad: letterbox of the original: ``original = (net - pad) / scale``;
            pad is (x, y). For augmented samples they describe the plain letterbox, not
            the random geometry.
        path: image file.
        augmented: the sample went through random augmentation.
    """

    image_id: int
    orig_hw: tuple[int, int]
    scale: float
    pad: tuple[int, int]
    path: str
    augmented: bool = False


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(S, S, 3) uint8 RGB -> (3, S, S) float32 in [0, 1]."""
    # numpy, single-threaded: torch's threaded float()/div_ on one small image costs more
    # in thread wake-ups than the arithmetic, and data loading shares the cores with training.
    out = np.empty((3, *img.shape[:2]), np.float32)
    np.multiply(img.transpose(2, 0, 1), np.float32(1 / 255), out=out, casting="unsafe")
    return torch.from_numpy(out)


def shrink_to(img: np.ndarray, size: int) -> np.ndarray:
    """Downscale so the longer side is at most ``size`` (never upscales)."""
    h, w = img.shape[:2]
    r = size / max(h, w)
    if r >= 1.0:
        return img
    # INTER_LINEAR like runtime/preprocess.py: evaluation sees the pixels serving sees.
    size_wh = (max(1, round(w * r)), max(1, round(h * r)))
    return cv2.resize(img, size_wh, interpolation=cv2.INTER_LINEAR)


def _sample_or_none(dataset: Any, i: int) -> Any:
    """``dataset.sample(i)``; with ``dataset.skip_bad``, None (and a warning) for an image
    that turns out damaged, which the collate functions leave out of the batch."""
    if not dataset.skip_bad:
        return dataset.sample(i)
    try:
        return dataset.sample(i)
    except DataError as e:
        log.warning("left out of this batch: %s", e)
        return None


class DetectionDataset(Dataset):
    """Labelled detection samples.

    ``__getitem__(i)`` -> (image (3, S, S) float32 RGB [0, 1], targets (N, 5) float32
    ``[cls, x1, y1, x2, y2]`` in network-input pixels, :class:`FrameMeta`).

    Args:
        split: loaded records.
        img_size: network input side S.
        augment: random mosaic/affine/flip/HSV (training) or plain letterbox (evaluation).
        aug: augmentation settings (default :class:`AugmentConfig`).
        cache: decode every image once at construction and keep it in RAM as uint8,
            shrunk to long side <= S (a 2000-image 320x240 set at S=320 is ~460 MB;
            at S=256 ~300 MB). Decoding errors then surface here, as DataError.
        seed: base seed of the augmentation.
        skip_bad: a sample whose image fails to decode is None (logged) rather than an
            error (see the module docstring).
    """

    def __init__(
        self,
        split: DatasetSplit,
        img_size: int,
        augment: bool,
        aug: AugmentConfig | None = None,
        cache: bool = True,
        seed: int = 0,
        skip_bad: bool = False,
    ) -> None:
        if not split.records:
            raise DataError(f"{split.source}: the split has no images")
        self.split = split
        self.records = split.records
        self.class_names = split.class_names
        self.img_size = int(img_size)
        self.augment = augment
        self.aug = aug or AugmentConfig()
        self.seed = int(seed)
        self.skip_bad = skip_bad
        self.epoch = 0
        self._cache: list[np.ndarray] | None = None
        if cache:
            self._cache = [self._decode(i) for i in range(len(self.records))]
            mb = sum(a.nbytes for a in self._cache) / 2**20
            log.info("cached %d images of %s (%.0f MB)", len(self._cache), split.source, mb)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (deterministic per (seed, epoch, i))."""
        self.epoch = int(epoch)

    def _decode(self, i: int) -> np.ndarray:
        r = self.records[i]
        return shrink_to(decode_image(r.path, expect_hw=(r.height, r.width)), self.img_size)

    def load(self, i: int) -> Sample:
        """Image ``i`` (possibly shrunk) with its boxes in that image's pixels."""
        r = self.records[i]
        img = self._cache[i] if self._cache is not None else self._decode(i)
        sx, sy = img.shape[1] / r.width, img.shape[0] / r.height
        boxes = r.boxes * np.array([sx, sy, sx, sy], dtype=np.float32)
        return img, boxes, r.classes

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, FrameMeta] | None:
        return _sample_or_none(self, i)

    def sample(self, i: int) -> tuple[torch.Tensor, torch.Tensor, FrameMeta]:
        """Sample ``i`` (see the class docstring); DataError when an image fails to decode."""
        r = self.records[i]
        s = self.img_size
        lb = Letterbox.fit((r.height, r.width), (s, s))
        scale, pad = lb.scale, (lb.pad_x, lb.pad_y)
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            img, boxes, classes = train_sample(self.load, i, len(self), self.aug, s, rng)
        else:
            img_c = self._cache[i] if self._cache is not None else self._decode(i)
            img, scale, pad = letterbox(img_c, s, src_hw=(r.height, r.width))
            boxes, classes = boxes_to_net(r.boxes, scale, pad), r.classes
        targets = np.concatenate([classes[:, None].astype(np.float32), boxes], axis=1)
        meta = FrameMeta(r.image_id, (r.height, r.width), scale, pad, str(r.path), self.augment)
        return to_tensor(img), torch.from_numpy(targets.astype(np.float32)), meta


def _present(batch: list) -> list:
    """The samples of ``batch`` that are not None (left out under ``skip_bad``)."""
    kept = [b for b in batch if b is not None]
    if not kept:
        raise DataError(
            f"none of the {len(batch)} images of a batch could be decoded (named in the "
            "warnings above); replace or remove them"
        )
    return kept


def collate(
    batch: list[tuple[torch.Tensor, torch.Tensor, FrameMeta] | None],
) -> tuple[torch.Tensor, torch.Tensor, list[FrameMeta]]:
    """Stack samples: images (B, 3, S, S), targets (M, 6) ``[batch_idx, cls, x1, y1, x2, y2]``
    in network-input pixels, metas (list of B). None samples are left out."""
    batch = _present(batch)
    images = torch.stack([b[0] for b in batch])
    targets = [
        torch.cat([torch.full((t.shape[0], 1), float(k)), t], dim=1)
        for k, (_, t, _) in enumerate(batch)
    ]
    return images, torch.cat(targets).reshape(-1, 6), [b[2] for b in batch]


class UnlabelledFrames(Dataset):
    """A folder of images without labels (e.g. fleet frames for teacher pseudo-labels).

    ``__getitem__(i)`` -> (image (3, S, S) float32 RGB [0, 1], :class:`FrameMeta`), the
    same letterbox as :class:`DetectionDataset` without augmentation. Images are listed
    by suffix in file-name order; image ids are 1-based positions. Every image's header
    is read here (a truncated JPEG is found before training): the first damaged one is a
    DataError, or with ``skip_bad`` each is left out and listed in ``skipped``.
    """

    def __init__(self, folder: str | Path, img_size: int, skip_bad: bool = False) -> None:
        self.folder = Path(folder)
        paths = list_images(self.folder)
        if not paths:
            raise DataError(f"{self.folder}: no images found (looked for .jpg/.png/... files)")
        bad = BadInputs(skip_bad)
        self.paths: list[Path] = []
        for path in paths:
            try:
                read_image_size(path)
            except DataError as e:
                bad.skip(e, path, image=path)
                continue
            self.paths.append(path)
        if not self.paths:
            raise DataError(f"{self.folder}: none of its {len(paths)} images can be read")
        self.skipped: tuple[Skipped, ...] = tuple(bad.items)
        self.img_size = int(img_size)
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, FrameMeta] | None:
        return _sample_or_none(self, i)

    def sample(self, i: int) -> tuple[torch.Tensor, FrameMeta]:
        """Frame ``i`` (see the class docstring); DataError when it fails to decode."""
        path = self.paths[i]
        img = decode_image(path)
        h, w = img.shape[:2]
        out, scale, pad = letterbox(shrink_to(img, self.img_size), self.img_size, src_hw=(h, w))
        return to_tensor(out), FrameMeta(i + 1, (h, w), scale, pad, str(path))


def collate_frames(
    batch: list[tuple[torch.Tensor, FrameMeta] | None],
) -> tuple[torch.Tensor, list[FrameMeta]]:
    """Stack unlabelled frames: images (B, 3, S, S), metas (list of B). None frames are
    left out."""
    batch = _present(batch)
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]
