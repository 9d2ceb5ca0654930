"""Adversarial losses of SynDiff: non-saturating GAN terms and the lazy R1 penalty."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(real) - log(1 - D(fake)), written with softplus for stability."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator term -log D(fake)."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """E ||grad_x D(x)||^2 on real data (the inputs must require grad). Applied every few steps
    ("lazy"), weighted by gamma / 2, it keeps the critic smooth where the data are."""
    gradients = torch.autograd.grad(real_logits.sum(), list(real_inputs), create_graph=True)
    return sum(g.pow(2).flatten(1).sum(1) for g in gradients).mean()
