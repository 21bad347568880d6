"""Config loading: YAML + overrides into frozen dataclasses, unknown keys rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import load, to_dict
from distill.train_config import TrainConfig
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


def test_bf16_modes_mean_the_same_for_student_and_teacher() -> None:
    import torch

    from distill.train_config import bf16_enabled

    cpu = torch.device("cpu")
    assert bf16_enabled("on", cpu) is True and bf16_enabled("off", cpu) is False
    cpu_has_bf16 = bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    assert bf16_enabled("auto", cpu) is cpu_has_bf16
    assert bf16_enabled("auto") is cpu_has_bf16  # no device: the CPU
