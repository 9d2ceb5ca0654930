"""The visual codebook: a VQ-GAN per imaging modality (diffusers' ``VQModel`` and a patch critic).

An image becomes a grid of codebook indices, a quarter of its side per token at the default
widths; the transformer predicts those indices and the decoder turns them back into the image.
Trained as a VQ-GAN is: L1 reconstruction, the codebook and commitment losses, and after a warm-up
a hinge loss from a patch discriminator that judges small regions, which keeps decoded textures
sharp where L1 alone blurs them. Codes no image used for a while are restarted on encoder outputs
of the current batch, so the codebook's usage (recorded with its perplexity) does not collapse to
a handful of entries.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import VQModel
from torch import nn

from medm2g.core.config.vq_ar import VQArConfig


def build_vq_model(channels: int, size: int, config: VQArConfig) -> VQModel:
    """An untrained VQ autoencoder for ``channels``-channel images of ``size`` pixels a side."""
    levels = len(config.widths)
    if size % 2 ** (levels - 1):
        raise ValueError(f"vq_ar.widths: {levels} levels halve the image {levels - 1} times, which a "
                         f"{size}-pixel image does not allow")
    return VQModel(in_channels=channels, out_channels=channels, down_block_types=("DownEncoderBlock2D",) * levels,
                   up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=config.widths,
                   layers_per_block=1, latent_channels=config.code_dim, sample_size=size,
                   num_vq_embeddings=config.codebook_size, norm_num_groups=8, vq_embed_dim=config.code_dim,
                   mid_block_add_attention=False)


class PatchDiscriminator(nn.Module):
    """Judges overlapping patches of an image as real or decoded (a PatchGAN's receptive field of
    about 22 pixels at three strided layers): one logit per patch."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        layers, previous = [], channels
        for index, out in enumerate((width, width * 2, width * 4)):
            layers += [nn.Conv2d(previous, out, 4, stride=2, padding=1)]
            if index:
                layers += [nn.GroupNorm(8, out)]
            layers += [nn.LeakyReLU(0.2)]
            previous = out
        layers += [nn.Conv2d(previous, 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


class VisualCodebook(nn.Module):
    """The VQ autoencoder of one imaging modality with its training critic."""

    def __init__(self, channels: int, size: int, config: VQArConfig):
        super().__init__()
        self.autoencoder = build_vq_model(channels, size, config)
        self.critic = PatchDiscriminator(channels)
        self.grid = size // 2 ** (len(config.widths) - 1)

    @property
    def codes(self) -> torch.Tensor:
        """(codebook_size, code_dim): the codebook's entries."""
        return self.autoencoder.quantize.embedding.weight

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, grid, grid) codebook indices."""
        latents = self.autoencoder.encode(images).latents
        distances = torch.cdist(latents.permute(0, 2, 3, 1).flatten(0, 2), self.codes)
        return distances.argmin(1).view(latents.shape[0], latents.shape[2], latents.shape[3])

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) indices -> (B, code_dim, h, w) codebook vectors."""
        return self.autoencoder.quantize.embedding(indices).permute(0, 3, 1, 2)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) indices -> (B, C, H, W) images in [-1, 1]."""
        decoded = self.autoencoder.decode(self.embed(indices), force_not_quantize=True).sample
        return decoded.clamp(-1, 1)

    def reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(decoded, codebook + commitment loss, indices) of a batch, differentiable through the
        straight-through estimator."""
        latents = self.autoencoder.encode(images).latents
        quantised, codebook_loss, (_, _, indices) = self.autoencoder.quantize(latents)
        decoded = self.autoencoder.decoder(self.autoencoder.post_quant_conv(quantised), None)
        return decoded, codebook_loss, indices.view(latents.shape[0], latents.shape[2], latents.shape[3])

    @torch.no_grad()
    def restart_codes(self, unused: torch.Tensor, images: torch.Tensor, generator: torch.Generator) -> int:
        """Move the ``unused`` codes onto encoder outputs of ``images`` drawn at random; returns how many."""
        count = int(unused.sum())
        if not count:
            return 0
        latents = self.autoencoder.encode(images).latents.permute(0, 2, 3, 1).flatten(0, 2)
        chosen = torch.randint(0, latents.shape[0], (count,), generator=generator).to(latents.device)
        self.codes[unused] = latents[chosen] + 1e-3 * torch.randn(count, latents.shape[1], generator=generator).to(latents.device)
        return count


def hinge_critic_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def codebook_usage(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """The share of codebook entries ``indices`` use, and the perplexity of their use (the number of
    equally used entries with the same entropy: ``codebook_size`` at best, 1 when one code does all)."""
    counts = torch.bincount(indices.flatten(), minlength=codebook_size).float()
    probabilities = counts / counts.sum()
    entropy = -(probabilities[probabilities > 0] * probabilities[probabilities > 0].log()).sum()
    return {"codes_used": float((counts > 0).float().mean()), "perplexity": float(math.exp(float(entropy)))}
