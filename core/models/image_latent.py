"""The image latent diffusion parts: a diffusers VAE and a diffusers conditional UNet.

Both are thin wrappers that keep the diffusers model as an attribute, so a
checkpoint of ``.autoencoder`` or ``.unet`` reloads with plain diffusers
``from_pretrained``, while medm2g code sees one interface for every modality.
"""

from __future__ import annotations

import math

import attrs
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn

from medm2g.registry.specs import ModalitySpec


@attrs.frozen
class ImageVAEConfig:
    """Width of the first level (doubling per level up to 4x), resnets per level; or ``pretrained``,
    a local Stable Diffusion folder whose VAE is used instead (:mod:`.pretrained_diffusers`)."""

    base_channels: int
    layers_per_block: int = 1
    norm_groups: int = 8
    pretrained: str | None = None


@attrs.frozen
class ImageUNetConfig:
    """Channels per level (the level count is free of the grid), resnets per level, attention head width."""

    block_channels: tuple[int, ...] = attrs.field(converter=tuple)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_groups: int = 8
    pretrained: str | None = None
    """A local Stable Diffusion folder whose UNet is used instead of one built from these sizes."""


def _levels(spec: ModalitySpec) -> int:
    """A VAE downsamples once between consecutive levels: factor 2^(levels-1)."""
    return int(math.log2(spec.downsample_factor)) + 1


class ImageVAE(nn.Module):
    """``encode`` samples the posterior (B, *latent_shape); ``decode`` maps latents to images in [-1, 1]."""

    def __init__(self, autoencoder: AutoencoderKL, keeps_pretrained_scale: bool = False):
        super().__init__()
        self.autoencoder = autoencoder
        self.keeps_pretrained_scale = keeps_pretrained_scale  # the VAE stage keeps the folder's latent scale

    @classmethod
    def from_spec(cls, spec: ModalitySpec, config: ImageVAEConfig) -> "ImageVAE":
        if config.pretrained:
            from medm2g.core.models.pretrained_diffusers import pretrained_autoencoder

            return cls(pretrained_autoencoder(config.pretrained, spec), keeps_pretrained_scale=True)
        levels = _levels(spec)
        channels = tuple(config.base_channels * min(2**level, 4) for level in range(levels))
        return cls(
            AutoencoderKL(
                in_channels=spec.channels,
                out_channels=spec.channels,
                down_block_types=("DownEncoderBlock2D",) * levels,
                up_block_types=("UpDecoderBlock2D",) * levels,
                block_out_channels=channels,
                layers_per_block=config.layers_per_block,
                latent_channels=spec.latent_shape[0],
                norm_num_groups=config.norm_groups,
                sample_size=spec.image_size[0],
            )
        )

    @property
    def scaling_factor(self) -> float:
        return float(self.autoencoder.config.scaling_factor)

    def set_scaling_factor(self, value: float) -> None:
        """Stored in the diffusers config, so ``AutoencoderKL.from_pretrained`` users get it too."""
        self.autoencoder.register_to_config(scaling_factor=float(value))

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | image), unscaled: what a latent cache keeps."""
        posterior = self.autoencoder.encode(images).latent_dist
        return posterior.mean, posterior.logvar

    def sample_latents(self, mean: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """A scaled latent drawn from the posterior (the same draw as diffusers' ``sample``)."""
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        return (mean + (0.5 * logvar).exp() * noise) * self.scaling_factor

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample_latents(*self.posterior(images), generator=generator)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latents / self.scaling_factor).sample

    def training_loss(self, images: torch.Tensor, generator: torch.Generator | None = None,
                      kl_weight: float = 1e-6) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 reconstruction plus a small KL to N(0, 1), as latent-diffusion autoencoders train
        (without their perceptual and adversarial terms: no pretrained network is downloaded)."""
        posterior = self.autoencoder.encode(images).latent_dist
        reconstruction = self.autoencoder.decode(posterior.sample(generator=generator)).sample
        l1 = (reconstruction - images).abs().mean()
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        return l1 + kl_weight * kl, {"l1": float(l1.detach()), "kl_per_dim": float(kl.detach())}

    def export_pretrained(self, folder) -> None:
        """A plain diffusers folder (config.json + safetensors): ``AutoencoderKL.from_pretrained(folder)``."""
        self.autoencoder.save_pretrained(folder, safe_serialization=True)


class ImageDenoiser(nn.Module):
    """Predicts the noise in image latents, cross-attending to a context sequence."""

    def __init__(self, unet: UNet2DConditionModel, context_dim: int | None = None):
        super().__init__()
        self.unet = unet
        width = unet.config.cross_attention_dim
        # a pretrained UNet attends over its own width (768 in SD 1.5): the shared space is projected
        # onto it, trained with the UNet (None when the widths agree)
        self.context_projection = (nn.Linear(context_dim, width) if context_dim is not None and context_dim != width
                                   else None)

    @classmethod
    def from_spec(cls, spec: ModalitySpec, config: ImageUNetConfig, context_dim: int) -> "ImageDenoiser":
        if config.pretrained:
            from medm2g.core.models.pretrained_diffusers import pretrained_unet

            return cls(pretrained_unet(config.pretrained, spec), context_dim)
        levels = len(config.block_channels)
        return cls(
            UNet2DConditionModel(
                sample_size=spec.latent_shape[1],
                in_channels=spec.latent_shape[0],
                out_channels=spec.latent_shape[0],
                down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
                block_out_channels=config.block_channels,
                layers_per_block=config.layers_per_block,
                cross_attention_dim=context_dim,
                attention_head_dim=config.attention_head_dim,
                norm_num_groups=config.norm_groups,
            )
        )

    def skip_connection_shapes(self) -> tuple[tuple[tuple[int, int, int], ...], tuple[int, int, int]]:
        """(channels, height, width) of each skip connection the UNet's encoder hands its decoder, in
        its order, and of the middle block's output: where a spatial guidance adds its residuals
        (``core.diffusion.spatial_guidance``). diffusers keeps the input convolution's output and
        each resnet's and downsampler's; a stride-2 downsampler gives ceil(size / 2)."""
        config = self.unet.config
        size = config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        channels = tuple(config.block_out_channels)
        shapes = [(channels[0], height, width)]
        for level, block_channels in enumerate(channels):
            shapes += [(block_channels, height, width)] * config.layers_per_block
            if level < len(channels) - 1:
                height, width = (height + 1) // 2, (width + 1) // 2
                shapes.append((block_channels, height, width))
        return tuple(shapes), (channels[-1], height, width)

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                guidance: torch.Tensor | None = None, skip_residuals=None) -> torch.Tensor:
        """``guidance`` (B, N, G): tokens for the cross-guidance sub-layers, once attached (eq. 6).
        ``skip_residuals``: ``.down`` and ``.mid`` tensors added to the skip connections and the
        middle block (a spatial guidance, shaped by :meth:`skip_connection_shapes`), and ``.out``
        added to the prediction."""
        kwargs = {"guidance": guidance} if guidance is not None else None
        if self.context_projection is not None:
            context = self.context_projection(context)
        residuals = {}
        if skip_residuals is not None:
            residuals = {"down_block_additional_residuals": tuple(skip_residuals.down),
                         "mid_block_additional_residual": skip_residuals.mid}
        predicted = self.unet(latents, timesteps, encoder_hidden_states=context, cross_attention_kwargs=kwargs,
                              **residuals).sample
        return predicted if skip_residuals is None else predicted + skip_residuals.out

    def export_pretrained(self, folder) -> None:
        """A plain diffusers folder: ``UNet2DConditionModel.from_pretrained(folder)``."""
        self.unet.save_pretrained(folder, safe_serialization=True)
