"""Exponential moving average of a stage's trained parameters.

Diffusion models sample better from averaged weights than from the last step's. The average
lives beside the parameters it follows, is saved in the stage's resumable state (so a resumed
stage continues the same average) and, when the stage ends, replaces the trained weights in
what the stage saves.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def ema_decay_at(decay: float, updates: int) -> float:
    """min(decay, (1 + k) / (10 + k)): early updates follow the weights closely, so the average
    is not mostly initial weights after a short stage."""
    return min(decay, (1 + updates) / (10 + updates))


class ParameterEMA(nn.Module):
    """Float32 shadow copies of ``parameters`` (as buffers, so a training state saves them)."""

    def __init__(self, parameters: Sequence[nn.Parameter], decay: float):
        super().__init__()
        self.followed = list(parameters)
        self.decay = decay
        for index, parameter in enumerate(self.followed):
            self.register_buffer(f"shadow_{index}", parameter.detach().float().clone())
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def shadows(self) -> list[torch.Tensor]:
        return [getattr(self, f"shadow_{index}") for index in range(len(self.followed))]

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - ema_decay_at(self.decay, int(self.updates))
        for shadow, parameter in zip(self.shadows(), self.followed):
            shadow.lerp_(parameter.detach().float(), weight)
        self.updates += 1

    @torch.no_grad()
    def copy_to_parameters(self) -> None:
        for shadow, parameter in zip(self.shadows(), self.followed):
            parameter.copy_(shadow.to(parameter.dtype))
