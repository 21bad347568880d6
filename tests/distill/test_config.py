"""Config loading: YAML + overrides into frozen dataclasses, unknown keys rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import load, to_dict
from distill.train import TrainConfig
from runtime.errors import ConfigError


def test_defaults_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("model: large\nepochs: 3\nloss:\n  box: 5.0\n")
    cfg = load(TrainConfig, p, ["lr=0.01", "aug.flip_lr=0.0", "loss.cls_loss=bce"])
    assert cfg.model == "large" and cfg.epochs == 3 and cfg.lr == 0.01
    assert cfg.loss.box == 5.0 and cfg.loss.cls_loss == "bce" and cfg.aug.flip_lr == 0.0
    assert to_dict(cfg)["loss"]["box"] == 5.0


@pytest.mark.parametrize(
    ("text", "overrides", "needle"),
    [
        ("epochz: 3\n", [], "epochz"),
        ("loss:\n  boxx: 1\n", [], "loss.boxx"),
        ("", ["epochs=many"], "epochs"),
        ("", ["nonsense"], "key=value"),
        ("- a\n- b\n", [], "mapping"),
        ("model: huge\n", [], "huge"),
        ("img_size: 100\n", [], "multiple of 32"),
    ],
)
def test_bad_configs_name_the_key(
    tmp_path: Path, text: str, overrides: list[str], needle: str
) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load(TrainConfig, p, overrides)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(TrainConfig, tmp_path / "nope.yaml")
