"""Starting a training run from existing weights (``TrainConfig.init``) with its early
layers frozen (``TrainConfig.freeze``): what ``understudy adapt`` does to a deployed
student, and what any fine-tuning run can do.

``freeze = k`` freezes the first ``k`` of the backbone's blocks in forward order
(``stem``, ``stage1`` … ``stage4``; 0 freezes nothing): their parameters get no gradient
(the optimizer leaves them out) and their BatchNorm running statistics stay as loaded
(momentum 0), so those layers compute exactly what the deployed model computed.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from runtime.errors import ConfigError

FREEZE_BLOCKS = ("stem", "stage1", "stage2", "stage3", "stage4")


def load_initial_weights(model: nn.Module, path: str | Path, class_names: tuple[str, ...]) -> None:
    """Load a checkpoint's weights into ``model`` (same architecture and classes), or raise
    ConfigError naming the checkpoint and what differs."""
    from distill.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path)
    if tuple(ckpt["class_names"]) != tuple(class_names):
        raise ConfigError(
            f"init {path}: its classes {ckpt['class_names']} differ from the data's "
            f"{list(class_names)}; start from a checkpoint trained on the same classes"
        )
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ConfigError(
            f"init {path}: its weights do not fit this model ({str(e)[:160]}); set model, "
            "width, depth and max_channels to the checkpoint's"
        ) from e


def freeze_blocks(model: nn.Module, k: int) -> list[str]:
    """Freeze the first ``k`` backbone blocks of a Detector (see the module docstring);
    returns their names."""
    if not 0 <= k <= len(FREEZE_BLOCKS):
        raise ConfigError(f"freeze {k} must be in 0..{len(FREEZE_BLOCKS)} (backbone blocks)")
    names = list(FREEZE_BLOCKS[:k])
    for name in names:
        block = getattr(model.backbone, name)
        for p in block.parameters():
            p.requires_grad_(False)
        for m in block.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.0
    return names
