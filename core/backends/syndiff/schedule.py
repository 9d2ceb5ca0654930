"""The few-step variance-preserving schedule of adversarial diffusion, and its posterior.

SynDiff (after denoising diffusion GANs) takes T = 4 large reverse steps instead of
hundreds of small ones; each step is too large for the reverse distribution to be
Gaussian, which is why a time-conditioned discriminator, not a Gaussian likelihood,
makes the generator's steps right. The forward process is the VP SDE with a linear
beta(t) = beta_min + t (beta_max - beta_min) on t in [0, 1], observed at t_i = i / T:

    alpha_bar_i = exp(-(beta_min t_i + (beta_max - beta_min) t_i^2 / 2)),
    beta_i = 1 - alpha_bar_i / alpha_bar_(i-1)          (i = 1..T; x_0 is the image).

With beta_max = 20, alpha_bar_T is about 4e-5: x_T is noise. The generator predicts
x_0 from x_i; x_(i-1) is then drawn from the Gaussian posterior q(x_(i-1) | x_0, x_i).
"""

from __future__ import annotations

import math

import attrs
import torch


@attrs.frozen
class AdversarialDiffusionSchedule:
    steps: int = attrs.field(default=4)
    beta_min: float = 0.1
    beta_max: float = 20.0

    @steps.validator
    def _at_least_one(self, attribute, value) -> None:
        if value < 1:
            raise ValueError(f"steps must be at least 1, got {value}")

    def alpha_bars(self) -> torch.Tensor:
        """alpha_bar_i for i = 0..T (float64); alpha_bar_0 = 1."""
        t = torch.arange(self.steps + 1, dtype=torch.float64) / self.steps
        return torch.exp(-(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2))

    def betas(self) -> torch.Tensor:
        """beta_i for i = 1..T, at index i - 1 (float64)."""
        alpha_bars = self.alpha_bars()
        return 1 - alpha_bars[1:] / alpha_bars[:-1]

    @staticmethod
    def _per_sample(values: torch.Tensor, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.to(like.device)[index].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, step: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_i ~ q(x_i | x_0) for each sample's ``step`` i in 1..T."""
        alpha_bar = self._per_sample(self.alpha_bars(), step, x0)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def q_step(self, previous: torch.Tensor, step: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_i ~ q(x_i | x_(i-1)): one forward step, for the discriminator's real pairs."""
        beta = self._per_sample(self.betas(), step - 1, previous)
        return (1 - beta).sqrt() * previous + beta.sqrt() * noise

    def posterior(self, x0: torch.Tensor, noisy: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_(i-1) | x_0, x_i) for each sample's ``step`` i in 1..T."""
        alpha_bars, betas = self.alpha_bars(), self.betas()
        previous = self._per_sample(alpha_bars, step - 1, x0)
        current = self._per_sample(alpha_bars, step, x0)
        beta = self._per_sample(betas, step - 1, x0)
        mean = (previous.sqrt() * beta / (1 - current)) * x0 + ((1 - beta).sqrt() * (1 - previous) / (1 - current)) * noisy
        variance = beta * (1 - previous) / (1 - current)
        return mean, variance

    def posterior_sample(self, x0: torch.Tensor, noisy: torch.Tensor, step: torch.Tensor,
                         noise: torch.Tensor) -> torch.Tensor:
        """x_(i-1) ~ q(x_(i-1) | x_0, x_i); at i = 1 the mean itself (x_0's posterior has no variance)."""
        mean, variance = self.posterior(x0, noisy, step)
        return mean + variance.clamp(min=0).sqrt() * noise

    def describe(self) -> str:
        alpha_bar_last = float(self.alpha_bars()[-1])
        return f"{self.steps} steps, beta {self.beta_min:g}-{self.beta_max:g}, alpha_bar_T {alpha_bar_last:.1e}"


def step_embedding(step: torch.Tensor, width: int, steps: int) -> torch.Tensor:
    """Sinusoidal embedding of the step index (scaled to the 1000-step range such embeddings expect)."""
    position = step.float() * (1000.0 / steps)
    half = width // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=step.device) / max(half - 1, 1))
    angles = position[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)
