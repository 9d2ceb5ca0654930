"""A PET-specific augmentation: count (Poisson) noise at a random dose."""

from __future__ import annotations

import attrs
import torch


@attrs.frozen
class CountNoise:
    """Resample each image as Poisson counts at a random total dose.

    PET images are reconstructed from detected coincidences, so their noise is
    count noise: lower dose, noisier image. ``counts`` is the (low, high) mean count
    per pixel at full intensity; the view keeps the [-1, 1] model range.
    """

    counts: tuple[float, float] = (20.0, 200.0)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        low, high = self.counts
        dose = torch.rand((batch.shape[0], 1, 1, 1), generator=generator) * (high - low) + low
        activity = ((batch.detach().cpu().float() + 1) / 2).clamp(min=0) * dose
        counts = torch.poisson(activity, generator=generator)
        return ((counts / dose) * 2 - 1).clamp(-1, 1).to(device=batch.device, dtype=batch.dtype)
