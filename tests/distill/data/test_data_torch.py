from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from distill.data.torch_dataset import (
    DetectionDataset,
    FrameMeta,
    UnlabelledFrames,
    collate,
    collate_frames,
)
from distill.data.transforms import AugmentConfig
from runtime.data.dataset import load_split
from runtime.errors import DataError


def test_eval_samples_map_back_to_original(tiny_synth: Path) -> None:
    split = load_split(tiny_synth, "val")
    ds = DetectionDataset(split, img_size=256, augment=False)
    for i in range(len(ds)):
        img, targets, meta = ds[i]
        rec = split.records[i]
        assert img.shape == (3, 256, 256) and img.dtype == torch.float32
        assert img.min() >= 0.0 and img.max() <= 1.0
        assert targets.shape == (rec.num_objects, 5) and targets.dtype == torch.float32
        assert isinstance(meta, FrameMeta) and meta.image_id == rec.image_id
        assert meta.orig_hw == (240, 320) and meta.scale == pytest.approx(0.8)
        assert meta.pad == (0, 32) and not meta.augmented
        back = (targets[:, 1:].numpy() - np.array(meta.pad * 2)) / meta.scale
        np.testing.assert_allclose(back, rec.boxes, atol=1e-3)
        np.testing.assert_array_equal(targets[:, 0].numpy(), rec.classes)
        # the pad rows are gray 114 and the picture starts at pad y
        assert torch.allclose(img[:, :32], torch.tensor(114 / 255.0))


def test_cache_and_no_cache_agree(tiny_synth: Path) -> None:
    split = load_split(tiny_synth, "val")
    cached = DetectionDataset(split, 256, augment=False, cache=True)  # shrunk 320x240 -> 256x192
    lazy = DetectionDataset(split, 256, augment=False, cache=False)
    for i in (0, 3):
        assert torch.equal(cached[i][0], lazy[i][0]) and torch.equal(cached[i][1], lazy[i][1])


def test_augmented_samples_are_deterministic_per_epoch(tiny_synth: Path) -> None:
    split = load_split(tiny_synth, "train")
    ds = DetectionDataset(split, 192, augment=True, aug=AugmentConfig(mosaic=1.0), seed=3)
    a_img, a_t, meta = ds[2]
    b_img, b_t, _ = ds[2]
    assert a_img.shape == (3, 192, 192) and meta.augmented
    assert torch.equal(a_img, b_img) and torch.equal(a_t, b_t)
    assert a_t.shape[1] == 5 and (a_t[:, 1:] >= 0).all() and (a_t[:, 1:] <= 192).all()
    assert set(a_t[:, 0].long().tolist()) <= set(range(8))
    ds.set_epoch(1)
    assert not torch.equal(ds[2][0], a_img)
    other_seed = DetectionDataset(split, 192, augment=True, seed=4, cache=False)
    assert not torch.equal(other_seed[2][0], a_img)


def test_collate_through_a_dataloader(tiny_synth: Path) -> None:
    split = load_split(tiny_synth, "train")
    ds = DetectionDataset(split, 160, augment=True)
    images, targets, metas = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert images.shape == (4, 3, 160, 160) and images.dtype == torch.float32
    assert targets.ndim == 2 and targets.shape[1] == 6 and len(metas) == 4
    sizes = [ds[i][1].shape[0] for i in range(4)]
    assert targets.shape[0] == sum(sizes)
    assert torch.equal(
        targets[:, 0], torch.repeat_interleave(torch.arange(4.0), torch.tensor(sizes))
    )
    empty = collate([(images[0], torch.zeros(0, 5), metas[0])])
    assert empty[1].shape == (0, 6)


def test_corrupt_image_found_lazily_and_when_caching(tiny_synth: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ds"
    shutil.copytree(tiny_synth, copy)
    split = load_split(copy, "val")
    lazy = DetectionDataset(split, 128, augment=False, cache=False)
    bad = split.records[1].path
    data = bad.read_bytes()
    bad.write_bytes(data[:2] + b"\x00" * 64)  # JPEG marker, garbage after
    with pytest.raises(DataError, match=rf"{bad.name}: image cannot be decoded"):
        lazy[1]
    with pytest.raises(DataError, match=bad.name):
        DetectionDataset(split, 128, augment=False, cache=True)


def test_unlabelled_frames(tiny_synth: Path, tmp_path: Path) -> None:
    frames = UnlabelledFrames(tiny_synth / "unlabelled", 256)
    assert len(frames) == 3
    img, meta = frames[2]
    assert img.shape == (3, 256, 256) and meta.image_id == 3 and meta.pad == (0, 32)
    assert meta.path.endswith("000002.jpg")
    batch, metas = collate_frames([frames[0], frames[1]])
    assert batch.shape == (2, 3, 256, 256) and len(metas) == 2
    with pytest.raises(DataError, match="no images found"):
        UnlabelledFrames(tmp_path, 256)
    with pytest.raises(DataError, match="not found"):
        UnlabelledFrames(tmp_path / "missing", 256)


def test_skip_bad_drops_an_image_damaged_mid_run_from_its_batch(
    tiny_synth: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "ds"
    shutil.copytree(tiny_synth, copy)
    split = load_split(copy, "train")
    ds = DetectionDataset(split, 64, augment=True, cache=False, skip_bad=True)
    bad = split.records[2].path
    bad.write_bytes(bad.read_bytes()[:-100])  # damaged after loading, while training
    ds.aug = AugmentConfig(mosaic=0.0)
    loader = DataLoader(ds, batch_size=3, collate_fn=collate, num_workers=1)
    assert [images.shape[0] for images, _, _ in loader] == [2, 3]  # the worker lives on
    with caplog.at_level("WARNING"):
        assert ds[2] is None
    assert f"left out of this batch: {bad}: truncated" in caplog.text
    with pytest.raises(DataError, match=rf"{bad.name}: truncated"):
        DetectionDataset(split, 64, augment=False, cache=False)[2]  # without: an error
    with pytest.raises(DataError, match="none of the 1 images of a batch"):
        collate([None])


def test_unlabelled_frames_skip_bad(tiny_synth: Path, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    shutil.copytree(tiny_synth / "unlabelled", folder)
    (folder / "000001.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"000001\.jpg: image file is empty"):
        UnlabelledFrames(folder, 64)  # found before any training
    frames = UnlabelledFrames(folder, 64, skip_bad=True)
    assert [p.name for p in frames.paths] == ["000000.jpg", "000002.jpg"]
    assert [s.image for s in frames.skipped] == [str(folder / "000001.jpg")]
    (folder / "000002.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert frames[1] is None
    batch, metas = collate_frames([frames[0], frames[1]])
    assert batch.shape[0] == 1 and len(metas) == 1
