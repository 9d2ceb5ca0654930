"""Sampling one modality's LDM from a condition in the aligned space.

Any modality's prompt embedding can be the condition: that is how a report's
C_text(x) drives the X-ray denoiser that was trained on C_xray(x) (sections 3.2, 3.4).
"""

from __future__ import annotations

import torch
from torch import nn

from medm2g.core.diffusion.schedule import DiffusionConfig, Generators, guided, sample, sampling_scheduler


def condition_context(embeddings: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, D) prompt embeddings as a one-token context (B, 1, D), or a token sequence (B, L, D) as
    it is; rows not kept become the null context (zeros), which the denoiser learned through
    condition dropout."""
    if embeddings.dim() == 3:
        return embeddings * keep[:, None, None].to(embeddings.dtype)
    if embeddings.dim() != 2:
        raise ValueError(f"a condition is (B, D) or (B, L, D), got shape {tuple(embeddings.shape)}")
    return (embeddings * keep[:, None].to(embeddings.dtype))[:, None]


def conditional_sample(denoiser: nn.Module, embeddings: torch.Tensor, latent_shape: tuple[int, ...],
                       config: DiffusionConfig, generator: Generators, steps: int | None = None,
                       guidance_scale: float | None = None) -> torch.Tensor:
    """Latents (B, *latent_shape) for the B conditions ((B, D) or token sequences (B, L, D)), with
    classifier-free guidance (the config's scale unless ``guidance_scale`` is given)."""
    size = embeddings.shape[0]
    device = embeddings.device

    def denoise(latents: torch.Tensor, timestep: torch.Tensor, conditioned: bool) -> torch.Tensor:
        keep = torch.full((size,), conditioned, device=device)
        timesteps = torch.as_tensor(timestep, device=device).expand(size)
        return denoiser(latents, timesteps, condition_context(embeddings, keep))

    scale = config.guidance_scale if guidance_scale is None else guidance_scale
    return sample(guided(denoise, scale), (size, *latent_shape), sampling_scheduler(config),
                  steps or config.sampling_steps, generator, device, config.eta)
