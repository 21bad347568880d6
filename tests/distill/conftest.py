"""Tiny datasets and checkpoints shared by the offline tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.data.synth import generate
from distill.data.synth_config import SynthConfig

TINY = SynthConfig(train=8, val=4, unlabelled=6, video_frames=3, video_width=160, video_height=120)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synth dataset: 8 train, 4 val, 6 unlabelled images of 320x240."""
    return generate(tmp_path_factory.mktemp("tiny") / "ds", seed=3, config=TINY)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A nano checkpoint trained for two steps on ``tiny_data`` at 64 px."""
    from distill.config import load
    from distill.train import train
    from distill.train_config import TrainConfig

    cfg = load(
        TrainConfig,
        None,
        ["model=nano", "img_size=64", "epochs=1", "batch_size=4", "max_steps=2", "bf16=off"],
    )
    return train(cfg, tiny_data, tmp_path_factory.mktemp("ckpt"), progress=False)


@pytest.fixture
def damaged_data(tmp_path: Path, tiny_data: Path) -> Path:
    """A copy of ``tiny_data`` with five damaged inputs: a truncated JPEG (train 000001),
    a label line with a class out of range (train 000002.txt:1), a val image that is not an
    image (val 000000), a label line of 3 fields (val 000001.txt:1) and an empty unlabelled
    frame (unlabelled 000003)."""
    import shutil

    ds = tmp_path / "damaged"
    shutil.copytree(tiny_data, ds, ignore=shutil.ignore_patterns("video*", "annotations"))
    jpg = ds / "images" / "train" / "000001.jpg"
    jpg.write_bytes(jpg.read_bytes()[:-500])
    label = ds / "labels" / "train" / "000002.txt"
    label.write_text("9 0.5 0.5 0.1 0.1\n" + label.read_text())
    (ds / "images" / "val" / "000000.jpg").write_bytes(b"not an image")
    label = ds / "labels" / "val" / "000001.txt"
    label.write_text("0 0.5 0.5\n" + label.read_text())
    (ds / "unlabelled" / "000003.jpg").write_bytes(b"")
    return ds


@pytest.fixture(scope="session")
def handful(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The handful dataset of tests/distill/handful.py (4 images, overfitted in 100 steps)."""
    from tests.distill.handful import make_handful

    return make_handful(tmp_path_factory.mktemp("handful"))


@pytest.fixture(scope="session")
def overfit(handful: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """model.pt of the run that learns ("learned": mAP50 79-100 on the handful's val
    images, the strong teacher of the KD tests) and of the same run with lr=0 ("frozen":
    mAP about 0), trained together on the same batches."""
    from distill.config import load
    from distill.train import train_many
    from distill.train_config import TrainConfig
    from tests.distill.handful import PLAIN

    out = tmp_path_factory.mktemp("overfit")
    cfgs = [load(TrainConfig, None, [*PLAIN, *extra]) for extra in ([], ["lr=0"])]
    paths = train_many(cfgs, handful, [out / "learned", out / "frozen"], progress=False)
    return dict(zip(("learned", "frozen"), paths))
