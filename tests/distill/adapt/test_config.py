"""The adaptation's training config: the deployed run's architecture, input size and KD
weights, with the adaptation's short schedule, init, freeze and site share."""

from __future__ import annotations

import pytest

from distill.adapt.config import AdaptConfig
from distill.adapt.run import distill_config
from distill.config import load
from runtime.errors import ConfigError

INFO = {
    "preset": "nano",
    "scale": {"width": 0.3, "depth": 0.4, "max_channels": 512},
    "img_size": 160,
    "config": {
        "model": "nano",
        "img_size": 160,
        "epochs": 16,
        "lr": 0.002,
        "batch_size": 8,
        "aug": {"mosaic": 0.7},
        "kd": {"method": "hybrid", "weights": {"logit": 0.5, "ld": 0.25}},
        "some_old_key": 1,  # from another version: ignored
    },
}


def test_the_deployed_run_shapes_the_adaptation() -> None:
    cfg = AdaptConfig(epochs=3, lr=1e-4, freeze=1, site_ratio=0.25)
    d = distill_config(INFO, cfg, "deployed.pt", "teacher.pt", None)
    assert (d.model, d.img_size, d.batch_size, d.aug.mosaic) == ("nano", 160, 8, 0.7)
    assert (d.width, d.depth, d.max_channels) == (0.3, 0.4, 512)
    assert (d.epochs, d.lr, d.freeze, d.init) == (3, 1e-4, 1, "deployed.pt")
    assert d.close_mosaic == 3 and d.eval_every == 0
    assert (d.kd.method, d.kd.unlabelled_ratio) == ("hybrid", 0.25)
    assert (d.kd.weights.logit, d.kd.weights.ld) == (0.5, 0.25)
    onnx = distill_config(INFO, cfg, "deployed.pt", "teacher.onnx", "layout.yaml")
    assert (onnx.kd.method, onnx.kd.teacher_layout) == ("logit", "layout.yaml")


def test_adapt_settings_are_checked() -> None:
    assert load(AdaptConfig, None, ["epochs=2", "site_metric=f1"]).site_metric == "f1"
    with pytest.raises(ConfigError, match="unknown key"):
        load(AdaptConfig, None, ["epoch=2"])
    with pytest.raises(ConfigError, match="site_metric"):
        AdaptConfig(site_metric="map")
    with pytest.raises(ConfigError, match="site_ratio"):
        AdaptConfig(site_ratio=1.0)
