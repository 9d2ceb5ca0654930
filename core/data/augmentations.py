"""Seeded augmentation ops for the medical visual invariant's two views (section 3.3).

Each op maps a batch (B, C, H, W) in [-1, 1] to a new batch and draws every random
number from the ``torch.Generator`` it is given (on the CPU, then moved to the
batch's device), so the same seed gives the same views on any device. Plugins
compose these into what respects their modality; nothing here flips left-right
unless asked, because laterality matters in radiology.
"""

from __future__ import annotations

import math
from typing import Sequence

import attrs
import torch
import torch.nn.functional as F


def _uniform(generator: torch.Generator, batch: torch.Tensor, low: float, high: float, *shape: int) -> torch.Tensor:
    values = torch.rand((batch.shape[0], *shape), generator=generator) * (high - low) + low
    return values.to(device=batch.device, dtype=batch.dtype)


@attrs.frozen
class IntensityJitter:
    """x * (1 + s) + o with s, o uniform in [-scale, scale] and [-shift, shift] per sample
    (a shift of the HU window for CT, of the display range for X-ray)."""

    scale: float = 0.1
    shift: float = 0.1

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        s = _uniform(generator, batch, -self.scale, self.scale, 1, 1, 1)
        o = _uniform(generator, batch, -self.shift, self.shift, 1, 1, 1)
        return (batch * (1 + s) + o).clamp(-1, 1)


@attrs.frozen
class Contrast:
    """Stretch around each sample's mean by a factor in ``range`` (X-ray exposure differences)."""

    range: tuple[float, float] = (0.8, 1.2)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        factor = _uniform(generator, batch, *self.range, 1, 1, 1)
        mean = batch.mean(dim=(1, 2, 3), keepdim=True)
        return ((batch - mean) * factor + mean).clamp(-1, 1)


@attrs.frozen
class Gamma:
    """Gamma correction with log-uniform gamma in ``range`` (MRI contrast variation)."""

    range: tuple[float, float] = (0.7, 1.5)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        log_gamma = _uniform(generator, batch, math.log(self.range[0]), math.log(self.range[1]), 1, 1, 1)
        unit = ((batch + 1) / 2).clamp(0, 1)
        return unit.pow(log_gamma.exp()) * 2 - 1


@attrs.frozen
class BiasField:
    """Multiply by a smooth random field (second-order polynomial in x, y) of up to
    ``strength`` relative amplitude: the MRI receive-coil inhomogeneity."""

    strength: float = 0.3

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _, _, height, width = batch.shape
        y, x = torch.meshgrid(
            torch.linspace(-1, 1, height, device=batch.device, dtype=batch.dtype),
            torch.linspace(-1, 1, width, device=batch.device, dtype=batch.dtype),
            indexing="ij",
        )
        basis = torch.stack([x, y, x * y, x**2 - 1 / 3, y**2 - 1 / 3])
        coefficients = _uniform(generator, batch, -1, 1, basis.shape[0])
        field = torch.einsum("bk,khw->bhw", coefficients, basis)[:, None]
        field = torch.exp(self.strength * field / basis.shape[0] ** 0.5)
        unit = (batch + 1) / 2
        return (unit * field).clamp(0, 1) * 2 - 1


@attrs.frozen
class SmallAffine:
    """Random rotation (degrees), isotropic scale and translation (fraction of the size);
    new pixels take the background value -1. ``horizontal_flip`` is a probability."""

    degrees: float = 5.0
    scale: float = 0.05
    translate: float = 0.03
    horizontal_flip: float = 0.0

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        angle = _uniform(generator, batch, -self.degrees, self.degrees).mul(math.pi / 180)
        zoom = _uniform(generator, batch, 1 - self.scale, 1 + self.scale)
        shift = _uniform(generator, batch, -self.translate, self.translate, 2) * 2
        flip = (_uniform(generator, batch, 0, 1) < self.horizontal_flip).to(batch.dtype) * -2 + 1
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, shift[:, 0]], -1), torch.stack([sin * flip, cos, shift[:, 1]], -1)], 1
        )
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        return F.grid_sample(batch + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


@attrs.frozen
class GaussianNoise:
    """Additive noise with standard deviation uniform in [0, std] per sample (quantum noise)."""

    std: float = 0.03

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        sigma = _uniform(generator, batch, 0, self.std, 1, 1, 1)
        noise = torch.randn(batch.shape, generator=generator).to(device=batch.device, dtype=batch.dtype)
        return (batch + sigma * noise).clamp(-1, 1)


@attrs.frozen
class Compose:
    """Apply ops in order, all from one generator."""

    ops: Sequence = attrs.field(converter=tuple)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for op in self.ops:
            batch = op(batch, generator)
        return batch
