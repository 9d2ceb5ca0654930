"""A ready implementation of every modality hook for imaging modalities.

An imaging plugin (built-in or third-party) is usually just its spec, its model
sizes and its augmentation; this class turns those into the hooks, so that no
plugin repeats the same seven hook bodies. Register an *instance* of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import attrs
import torch

from medm2g.core.data.augmentations import Compose
from medm2g.core.errors import PluginError
from medm2g.core.io.imaging import read_imaging, write_imaging
from medm2g.core.models.image_encoder import ImageEncoderConfig, ImagePromptEncoder
from medm2g.core.models.image_latent import ImageDenoiser, ImageUNetConfig, ImageVAE, ImageVAEConfig
from medm2g.core.models.options import apply_options
from medm2g.registry import ModalitySpec, ModelSize, PhantomRendering, hookimpl


@attrs.frozen
class ImagingSizes:
    """The encoder, VAE and UNet configs of one :class:`ModelSize`."""

    encoder: ImageEncoderConfig
    vae: ImageVAEConfig
    unet: ImageUNetConfig


DEFAULT_IMAGING_SIZES: Mapping[ModelSize, ImagingSizes] = {
    # Builds in milliseconds: for tests and conformance checks.
    ModelSize.TINY: ImagingSizes(
        ImageEncoderConfig("test_resnet"), ImageVAEConfig(base_channels=8, norm_groups=4), ImageUNetConfig((16, 32))
    ),
    # Trains on a 2-core CPU in minutes at a 64x64 grid (VAE: 0.55 s per step of 16 images; UNet: 0.41 s).
    ModelSize.CPU: ImagingSizes(
        ImageEncoderConfig("resnet10t"), ImageVAEConfig(base_channels=16), ImageUNetConfig((32, 64, 64))
    ),
    # Stable-Diffusion-like widths, UNet depth 4, as the paper's image diffusers.
    ModelSize.PAPER: ImagingSizes(
        ImageEncoderConfig("resnet50"),
        ImageVAEConfig(base_channels=128, layers_per_block=2, norm_groups=32),
        ImageUNetConfig((320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=64, norm_groups=32),
    ),
}


@attrs.frozen(eq=False)  # hashable by identity: pluggy keeps plugins in sets
class ImagingModalityPlugin:
    """All modality hooks for one imaging modality, from its spec, sizes and augmentation,
    and optionally its phantom renderer (``phantom(spec, subject, generator)``)."""

    spec: ModalitySpec
    view_augmentation: Compose
    sizes: Mapping[ModelSize, ImagingSizes] = DEFAULT_IMAGING_SIZES
    phantom: Callable[[ModalitySpec, object, torch.Generator], PhantomRendering] | None = None

    def __attrs_post_init__(self) -> None:
        if not self.spec.kind.is_imaging:
            raise PluginError(f"ImagingModalityPlugin got {self.spec.kind.value} modality {self.spec.name!r}")

    def _size(self, size: ModelSize) -> ImagingSizes:
        try:
            return self.sizes[ModelSize(size)]
        except KeyError:
            raise PluginError(f"modality {self.spec.name!r} has no {size!s} model size") from None

    @hookimpl
    def medm2g_modality_spec(self) -> ModalitySpec:
        return self.spec

    @hookimpl
    def medm2g_prompt_encoder(self, spec: ModalitySpec, size: ModelSize, embed_dim: int,
                              options: Mapping[str, Any]) -> ImagePromptEncoder:
        config = apply_options(self._size(size).encoder, options, f"models.{spec.name}.prompt_encoder")
        return ImagePromptEncoder(config, spec.channels, embed_dim)

    @hookimpl
    def medm2g_vae(self, spec: ModalitySpec, size: ModelSize, options: Mapping[str, Any]) -> ImageVAE:
        return ImageVAE.from_spec(spec, apply_options(self._size(size).vae, options, f"models.{spec.name}.vae"))

    @hookimpl
    def medm2g_unet(self, spec: ModalitySpec, size: ModelSize, context_dim: int,
                    options: Mapping[str, Any]) -> ImageDenoiser:
        config = apply_options(self._size(size).unet, options, f"models.{spec.name}.unet")
        return ImageDenoiser.from_spec(spec, config, context_dim)

    @hookimpl
    def medm2g_augmentation(self, spec: ModalitySpec) -> Compose:
        return self.view_augmentation

    @hookimpl
    def medm2g_read(self, spec: ModalitySpec, path: Path):
        return read_imaging(path, spec)

    @hookimpl
    def medm2g_write(self, spec: ModalitySpec, sample, path: Path, provenance) -> Path:
        return write_imaging(sample, path, spec, provenance)

    @hookimpl
    def medm2g_phantom_render(self, spec: ModalitySpec, subject, generator: torch.Generator):
        return None if self.phantom is None else self.phantom(spec, subject, generator)
