"""Image VAEs and UNets started from a local Stable Diffusion folder, the paper's initialisation.

MedM2G initialises its image diffusion models from Stable Diffusion 1.5 (section 4). medm2g reads
the standard diffusers layout from a folder the user names (``FOLDER/vae``, ``FOLDER/unet``, or a
folder that is itself one model); nothing is downloaded, and only safetensors weights are read
(a ``.bin`` file would be unpickled).

What differs between Stable Diffusion and a medical modality is adapted, by rules:

- **Channels.** A grey-scale modality (1 channel) against RGB weights: the VAE's input convolution
  takes the *sum* of its three RGB filters, so a grey image gives exactly what the pretrained
  encoder gave for that grey image repeated in R, G and B; its output convolution takes the *mean*
  of the three RGB output filters (and biases), the grey of what it would have drawn. For C
  channels other than 1 and 3, each input filter is the RGB sum divided by C (a grey image spread
  over C channels keeps its response) and each output filter is the RGB mean.
- **Grid.** The latent channels and the VAE's downsampling must match the modality's spec
  (Stable Diffusion: 4 channels, factor 8); a mismatch is an error naming both. The models'
  ``sample_size`` is set to the run's grid (they are convolutional).
- **Cross-attention width.** Where the UNet's ``cross_attention_dim`` (768 in SD 1.5) differs from
  the shared space, a linear projection from the shared space to it is added and trained with the UNet.
- **Latent scale.** The VAE keeps its folder's ``scaling_factor`` (0.18215 in SD 1.5); the VAE stage
  does not recalibrate it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from medm2g.core.errors import ConfigError
from medm2g.registry.specs import ModalitySpec


def diffusers_folder(folder: str | Path, part: str, class_name: str) -> Path:
    """``folder/part`` of a Stable Diffusion folder, or ``folder`` itself when it holds the model;
    a one-line error naming what was expected otherwise."""
    root = Path(folder).expanduser()
    for candidate in (root / part, root):
        config = candidate / "config.json"
        if config.is_file():
            try:
                found = json.loads(config.read_text(encoding="utf-8")).get("_class_name")
            except json.JSONDecodeError as error:
                raise ConfigError(f"{config}: not valid JSON ({error})") from None
            if found not in (class_name, None):
                raise ConfigError(f"{config}: a {found}, where a {class_name} was expected "
                                  f"(give a Stable Diffusion folder with {part}/, or the {part} folder itself)")
            if not any(candidate.glob("*.safetensors")):
                raise ConfigError(f"{candidate}: no .safetensors weights (medm2g never unpickles a .bin file; convert "
                                  f"it where you trust it: {class_name}.from_pretrained(DIR).save_pretrained(DIR))")
            return candidate
    raise ConfigError(f"{root}: not a diffusers {class_name} folder: expected {root / part / 'config.json'} "
                      f"(a Stable Diffusion folder) or {root / 'config.json'}")


def _load(kind, folder: Path):
    try:
        return kind.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{folder}: cannot load a {kind.__name__} from it: {reason}") from None


@torch.no_grad()
def _adapt_input(convolution: nn.Conv2d, channels: int) -> nn.Conv2d:
    """The RGB input convolution as one taking ``channels``: the RGB filters summed, spread over them."""
    weight = convolution.weight.sum(dim=1, keepdim=True) / channels
    adapted = nn.Conv2d(channels, convolution.out_channels, convolution.kernel_size, convolution.stride,
                        convolution.padding, bias=convolution.bias is not None)
    adapted.weight.copy_(weight.expand(-1, channels, -1, -1))
    if convolution.bias is not None:
        adapted.bias.copy_(convolution.bias)
    return adapted


@torch.no_grad()
def _adapt_output(convolution: nn.Conv2d, channels: int) -> nn.Conv2d:
    """The RGB output convolution as one drawing ``channels``: each the mean of the RGB filters."""
    adapted = nn.Conv2d(convolution.in_channels, channels, convolution.kernel_size, convolution.stride,
                        convolution.padding, bias=convolution.bias is not None)
    adapted.weight.copy_(convolution.weight.mean(dim=0, keepdim=True).expand(channels, -1, -1, -1))
    if convolution.bias is not None:
        adapted.bias.fill_(float(convolution.bias.mean()))
    return adapted


def pretrained_autoencoder(folder: str | Path, spec: ModalitySpec):
    """A diffusers ``AutoencoderKL`` from ``folder`` (its ``vae/``), adapted to ``spec``."""
    from diffusers import AutoencoderKL

    path = diffusers_folder(folder, "vae", "AutoencoderKL")
    autoencoder = _load(AutoencoderKL, path)
    config = autoencoder.config
    factor = 2 ** (len(config.block_out_channels) - 1)
    if config.latent_channels != spec.latent_shape[0] or factor != spec.downsample_factor:
        raise ConfigError(f"{path}: its latents have {config.latent_channels} channels at 1/{factor} of the image, "
                          f"{spec.name}'s spec {spec.latent_shape[0]} at 1/{spec.downsample_factor} (image "
                          f"{list(spec.image_size)} -> latent {list(spec.latent_shape)}); set grids.{spec.name} in the "
                          f"run config to match the folder")
    if config.in_channels != spec.channels:
        if config.in_channels != 3:
            raise ConfigError(f"{path}: {config.in_channels} input channels; medm2g adapts RGB (3) weights to "
                              f"{spec.name}'s {spec.channels}, not others")
        autoencoder.encoder.conv_in = _adapt_input(autoencoder.encoder.conv_in, spec.channels)
        autoencoder.decoder.conv_out = _adapt_output(autoencoder.decoder.conv_out, spec.channels)
        autoencoder.register_to_config(in_channels=spec.channels, out_channels=spec.channels)
    autoencoder.register_to_config(sample_size=spec.image_size[0])
    return autoencoder


def pretrained_unet(folder: str | Path, spec: ModalitySpec):
    """A diffusers ``UNet2DConditionModel`` from ``folder`` (its ``unet/``), on ``spec``'s latent grid."""
    from diffusers import UNet2DConditionModel

    path = diffusers_folder(folder, "unet", "UNet2DConditionModel")
    unet = _load(UNet2DConditionModel, path)
    channels = spec.latent_shape[0]
    if unet.config.in_channels != channels or unet.config.out_channels != channels:
        raise ConfigError(f"{path}: a UNet for {unet.config.in_channels}-channel latents, {spec.name}'s are "
                          f"{channels}-channel ({list(spec.latent_shape)})")
    unet.register_to_config(sample_size=spec.latent_shape[1])
    return unet
