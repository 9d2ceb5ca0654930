"""The two alignment losses of MedM2G, written once and used by every stage.

* :func:`symmetric_info_nce`: eq. 3, central alignment. For a batch of N pairs, each
  embedding's positive is its partner and the other N-1 partners are negatives;
  L = (L_AB + L_BA) / 2 on L2-normalised embeddings with temperature tau.
* :func:`visual_invariant_loss`: eq. 4, the medical visual invariant (Barlow Twins).
  Both views' embeddings are standardised along the batch, C = Z1^T Z2 / N is their
  cross-correlation, and L = (sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2) / D.
  The paper's eq. 4 divides by the feature dimension D (Barlow Twins itself does not);
  lambda defaults to Barlow Twins' 0.0051.

Both compute in float32 whatever the input dtype (bfloat16 has 8 mantissa bits: a
softmax or a correlation over a batch in it loses the signal), and both refuse a
batch of one, where no negative exists and no batch statistic is defined.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BARLOW_TWINS_LAMBDA = 0.0051
"""The off-diagonal weight of Barlow Twins (Zbontar et al., 2021), which the paper follows."""


def _check_batch(*tensors: torch.Tensor, what: str) -> None:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1 or tensors[0].ndim != 2:
        raise ValueError(f"{what} needs two (batch, dim) tensors of one shape, got {sorted(shapes)}")
    if tensors[0].shape[0] < 2:
        raise ValueError(f"{what} is undefined for batch size {tensors[0].shape[0]}: it needs at least 2 samples")


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: torch.Tensor | float = 0.07) -> torch.Tensor:
    """Eq. 3: mean of the A->B and B->A cross-entropies over cosine similarities / temperature."""
    _check_batch(a, b, what="InfoNCE")
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    temperature = torch.as_tensor(temperature, dtype=torch.float32, device=a.device)
    logits = a @ b.T / temperature
    targets = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


class LearnableTemperature(nn.Module):
    """tau = exp(-log_scale), learned, clamped to [min, max] so the logits cannot blow up
    (CLIP clamps its logit scale at 100, i.e. tau >= 0.01)."""

    def __init__(self, initial: float = 0.07, minimum: float = 0.01, maximum: float = 1.0):
        super().__init__()
        if not minimum <= initial <= maximum:
            raise ValueError(f"initial temperature {initial} outside [{minimum}, {maximum}]")
        self.log_scale = nn.Parameter(torch.tensor(-math.log(initial)))
        self.minimum, self.maximum = minimum, maximum

    def forward(self) -> torch.Tensor:
        return torch.exp(-self.log_scale).clamp(self.minimum, self.maximum)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """C (D x D) of the two views' embeddings, each standardised along the batch."""
    z1, z2 = z1.float(), z2.float()
    z1 = (z1 - z1.mean(0)) / (z1.std(0, unbiased=False) + eps)
    z2 = (z2 - z2.mean(0)) / (z2.std(0, unbiased=False) + eps)
    return z1.T @ z2 / z1.shape[0]


def visual_invariant_loss(z1: torch.Tensor, z2: torch.Tensor, lambda_offdiagonal: float = BARLOW_TWINS_LAMBDA) -> torch.Tensor:
    """Eq. 4: (sum (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2) / D."""
    _check_batch(z1, z2, what="the visual-invariant (Barlow Twins) loss")
    c = cross_correlation(z1, z2)
    diagonal = torch.diagonal(c)
    on = (1 - diagonal).pow(2).sum()
    off = c.pow(2).sum() - diagonal.pow(2).sum()
    return (on + lambda_offdiagonal * off) / c.shape[0]
