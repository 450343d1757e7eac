"""AdamW with a linear warm-up and cosine decay, the usual recipe for attention networks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


class OptimSettings(Protocol):
    """The settings read here; ``TrainConfig`` and the atomistic trainer's config both have them."""

    lr: float
    weight_decay: float
    warmup_steps: int
    steps: int
    min_lr_ratio: float


def build_optimizer(model: nn.Module, config: OptimSettings) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices, since decaying gains and biases only hurts."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    keep = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


@dataclass
class WarmupCosine:
    """Learning-rate factor: linear up to 1 over ``warmup`` steps, then a cosine to ``floor``.

    The warm-up starts at 1 / (warmup + 1), not 0, so that no step is spent without learning.

    A plain object of numbers (not a closure), so that ``LambdaLR.state_dict`` stores it as
    primitives and a checkpoint stays loadable with ``weights_only=True``.
    """

    warmup: int
    total: int
    floor: float

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        span = max(self.total - self.warmup, 1)
        progress = min((step - self.warmup) / span, 1.0)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimSettings
) -> torch.optim.lr_scheduler.LambdaLR:
    schedule = WarmupCosine(config.warmup_steps, config.steps, config.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
