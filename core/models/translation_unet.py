"""A plain UNet from one image to another: the pix2pix-style regression baseline's network and
SynDiff's non-diffusive translators (the cycle that lets it train on unpaired data)."""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers import UNet2DModel
from torch import nn


class RegressionUNet(nn.Module):
    """Source image (C_s, H, W) to target image (C_t, H, W), both in model space [-1, 1]."""

    def __init__(self, source_channels: int, target_channels: int, size: int, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        self.unet = UNet2DModel(sample_size=size, in_channels=source_channels, out_channels=target_channels,
                                block_out_channels=tuple(widths), layers_per_block=1, norm_num_groups=8,
                                down_block_types=("DownBlock2D",) * len(widths),
                                up_block_types=("UpBlock2D",) * len(widths))

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        timestep = torch.zeros(source.shape[0], device=source.device)  # one "step": a plain UNet
        return self.unet(source, timestep).sample
