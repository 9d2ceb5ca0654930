"""SynDiff's networks, pure PyTorch (no compiled ops: SynDiff's own CUDA kernels are its users'
most common install failure), so they train on a CPU at small size and on any GPU.

* :class:`DiffusiveGenerator`: from the noisy target x_i, the source image and a latent
  noise vector z, predicts the clean target x_0 (one large reverse step's generator). A
  diffusers ``UNet2DModel`` whose step embedding carries z as well (``class_embed_type
  ="identity"`` adds a per-sample vector to the time embedding).
* :class:`StepDiscriminator`: D(x_(i-1), x_i, i), a convolutional critic of one large step,
  conditioned on the step through a projected embedding added in every block. With
  ``time_conditioned=False`` it judges single images: the non-diffusive module's critic.
The non-diffusive translators are the baselines' :class:`~medm2g.core.apps.baselines.regression.RegressionUNet`.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from torch import nn

from medm2g.core.backends.syndiff.schedule import step_embedding


class DiffusiveGenerator(nn.Module):
    def __init__(self, channels: int, source_channels: int, size: int, steps: int, latent_dim: int = 64,
                 widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        self.steps, self.latent_dim = steps, latent_dim
        time_dim = widths[0] * 4
        self.unet = UNet2DModel(sample_size=size, in_channels=channels + source_channels, out_channels=channels,
                                block_out_channels=widths, layers_per_block=1, norm_num_groups=8,
                                down_block_types=("DownBlock2D",) * len(widths),
                                up_block_types=("UpBlock2D",) * len(widths), class_embed_type="identity")
        self.latent_mapping = nn.Sequential(nn.Linear(latent_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))

    def forward(self, noisy: torch.Tensor, source: torch.Tensor, step: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """x_0 estimate in [-1, 1] (tanh: the images' range) from x_i (step i in 1..T)."""
        timesteps = step.float() * (1000.0 / self.steps)
        output = self.unet(torch.cat([noisy, source], dim=1), timesteps, class_labels=self.latent_mapping(latent)).sample
        return torch.tanh(output)


class StepDiscriminator(nn.Module):
    """Logits of "this (x_(i-1), x_i) came from the forward process" (or, unconditioned, "this image is real")."""

    def __init__(self, channels: int, steps: int, time_conditioned: bool = True, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        self.steps, self.time_conditioned = steps, time_conditioned
        self.embedding_width = widths[0] * 2
        inputs = channels * (2 if time_conditioned else 1)
        self.blocks = nn.ModuleList()
        self.step_projections = nn.ModuleList()
        previous = inputs
        for width in widths:
            self.blocks.append(nn.Conv2d(previous, width, 4, stride=2, padding=1))
            self.step_projections.append(nn.Linear(self.embedding_width, width))
            previous = width
        self.activation = nn.LeakyReLU(0.2)
        self.head = nn.Conv2d(previous, 1, 3, padding=1)

    def forward(self, image: torch.Tensor, noisier: torch.Tensor | None = None,
                step: torch.Tensor | None = None) -> torch.Tensor:
        """One logit per sample: the mean of a patch map, as PatchGAN critics average."""
        if self.time_conditioned:
            if noisier is None or step is None:
                raise ValueError("a step discriminator judges (x_(i-1), x_i, i): give the noisier image and the step")
            features = torch.cat([image, noisier], dim=1)
            embedding = step_embedding(step, self.embedding_width, self.steps)
        else:
            features, embedding = image, None
        for block, projection in zip(self.blocks, self.step_projections):
            features = block(features)
            if embedding is not None:
                features = features + projection(embedding)[:, :, None, None]
            features = self.activation(features)
        return self.head(features).mean(dim=(1, 2, 3))
