"""Optimizer, learning-rate schedule, EMA weights and seeding for the training loop."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(
    params: list[tuple[str, nn.Parameter]],
    kind: str,
    lr: float,
    weight_decay: float,
    momentum: float,
) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov); no weight decay on biases and norm weights."""
    decay, no_decay = [], []
    for name, p in params:
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    from runtime.errors import ConfigError

    raise ConfigError(f"optimizer {kind!r} is not one of adamw, sgd")


def lr_at(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, min_ratio: float
) -> float:
    """Linear warm-up from 0.1*lr, then cosine decay to ``min_ratio * lr``."""
    if step < warmup_steps:
        return base_lr * (0.1 + 0.9 * step / max(1, warmup_steps))
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


class ModelEMA:
    """Exponential moving average of weights (and a copy of BN buffers), with a ramp so
    early updates are not dominated by the random init: d = decay * (1 - exp(-n / tau))."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float = 500.0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        msd = model.state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])
