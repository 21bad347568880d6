"""Fine-tuning: a run that starts from a checkpoint's weights (``init``) keeps its first
``freeze`` backbone blocks exactly as loaded (weights and BatchNorm statistics)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.checkpoint import load_detector, read_checkpoint, save_atomic
from distill.config import load
from distill.train import train
from distill.train_config import TrainConfig
from runtime.errors import ConfigError


def _cfg(*extra: str) -> TrainConfig:
    base = ["model=nano", "img_size=64", "epochs=1", "batch_size=4", "max_steps=3", "bf16=off"]
    return load(TrainConfig, None, [*base, "lr=0.05", "warmup_epochs=0", *extra])


def test_init_and_freeze(tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path) -> None:
    start, _ = load_detector(tiny_checkpoint)
    out = train(
        _cfg(f"init={tiny_checkpoint}", "freeze=2"), tiny_data, tmp_path / "ft", progress=False
    )
    tuned, info = load_detector(out)
    assert info["config"]["init"] == str(tiny_checkpoint) and info["config"]["freeze"] == 2
    before, after = start.state_dict(), tuned.state_dict()
    frozen = [  # num_batches_tracked counts steps; it is not used with a set momentum
        k
        for k in before
        if k.startswith(("backbone.stem.", "backbone.stage1.")) and "num_batches" not in k
    ]
    assert any("running_mean" in k for k in frozen)
    for k in frozen:
        assert torch.equal(before[k], after[k]), k
    moved = [
        k for k in before if k.startswith("backbone.stage3.") and before[k].is_floating_point()
    ]
    assert any(not torch.equal(before[k], after[k]) for k in moved)
    # without init the run starts elsewhere: the loaded weights are what it started from
    fresh, _ = load_detector(
        train(_cfg("max_steps=1"), tiny_data, tmp_path / "fresh", progress=False)
    )
    k = "backbone.stem.conv.weight" if "backbone.stem.conv.weight" in before else frozen[0]
    assert not torch.equal(fresh.state_dict()[k], before[k])


def test_init_from_a_checkpoint_of_other_classes_is_refused(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path
) -> None:
    ckpt = read_checkpoint(tiny_checkpoint)
    ckpt["class_names"] = [f"x{i}" for i in range(len(ckpt["class_names"]))]
    other = save_atomic(ckpt, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="classes"):
        train(_cfg(f"init={other}"), tiny_data, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="freeze"):
        _cfg("freeze=6")
