"""Spatial guidance: an imaging source's latent added, where it lies, to the target UNet's skip connections.

Beyond the paper. Its cross-guidance (eq. 6) reaches A's denoiser only through attention to the
tokens V_B([z^B, f_B]), and on the phantom cohort that path carried no anatomy: MRI -> CT gave the
same head for every input MRI, 12 dB below a plain L1 translation UNet (12.6 against 24.7 dB on 100
held-out subjects). Between two imaging modalities the source's anatomy is where the target's is,
so this path reads B's latent at A's latent grid with a small convolutional encoder and adds its
features to A's skip connections, middle block and prediction through 1x1 convolutions that start
at zero, as ControlNet adds its encoder copy's features: a trained denoiser is unchanged until a
round trains the path, and the denoiser itself stays frozen.

A round owns the path of its pair, both directions (``Part.SPATIAL_GUIDANCE`` of the pair's
label): it is new in that round, so the multi-flow freezing of earlier rounds is untouched.
The target's denoiser says where its skip connections are (``skip_connection_shapes``) and
takes the residuals in ``forward(..., skip_residuals=...)``; a denoiser without those (the text
diffuser, a plugin's own) simply gets no spatial path.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn


@attrs.frozen
class SkipShapes:
    """Where a UNet's encoder hands features to its decoder: (channels, height, width) of every
    down-block skip connection, in the UNet's order, of the middle block's output, and of the
    UNet's own output (the latent: its prediction)."""

    down: tuple[tuple[int, int, int], ...]
    mid: tuple[int, int, int]
    out: tuple[int, int, int]


@attrs.frozen
class SkipResiduals:
    """What :class:`SpatialGuidance` adds to a UNet: one tensor per skip connection, one for the
    middle and one for its prediction."""

    down: tuple[torch.Tensor, ...]
    mid: torch.Tensor
    out: torch.Tensor

    def scaled(self, factor: torch.Tensor) -> "SkipResiduals":
        """Each row multiplied by ``factor`` (B,): zero rows are the null guidance of a dropped condition."""
        def scale(x: torch.Tensor) -> torch.Tensor:
            return x * factor.to(x.dtype).view(-1, 1, 1, 1)
        return SkipResiduals(tuple(scale(x) for x in self.down), scale(self.mid), scale(self.out))

    def __add__(self, other: "SkipResiduals") -> "SkipResiduals":
        return SkipResiduals(tuple(a + b for a, b in zip(self.down, other.down)), self.mid + other.mid,
                             self.out + other.out)


def supports_spatial_guidance(denoiser: nn.Module, source_latent_shape: tuple[int, ...]) -> bool:
    """A spatial path exists from a source of this latent shape into ``denoiser`` when the source
    latent has extent (not a 768x1x1 text latent) and the denoiser exposes its skip connections."""
    spatial_source = len(source_latent_shape) == 3 and source_latent_shape[1] * source_latent_shape[2] > 1
    return spatial_source and callable(getattr(denoiser, "skip_connection_shapes", None))


def _group_norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class SpatialGuidance(nn.Module):
    """Source latent (B, C_B, h, w) at its step, with the target's noisy latent at its own step ->
    :class:`SkipResiduals` for the target's UNet.

    As ControlNet's copy sees the noisy latent beside its condition, the path sees both: the source
    resized to the target's latent grid, stacked with the target's noisy latent, embedded by two
    convolutions with both steps' embeddings added (a clean source is step 0), then brought down
    the target's resolutions by strided convolutions. At each skip connection, the middle block
    and the prediction, a zero-initialised 1x1 convolution maps the features at that resolution
    to its channels; the prediction's is the direct path that lets a few hundred steps already
    correct the frozen UNet's output (measured: docs/decisions.md)."""

    def __init__(self, source_latent_shape: tuple[int, int, int], skips: SkipShapes, width: int):
        super().__init__()
        channels = source_latent_shape[0] + skips.out[0]
        self.grid = skips.down[0][1:]
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(width, width)
        self.target_time_embedding = TimestepEmbedding(width, width)
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.stem_out = nn.Sequential(_group_norm(width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1), nn.SiLU())
        resolutions = sorted({shape[1:] for shape in (*skips.down, skips.mid)}, key=lambda hw: -hw[0] * hw[1])
        self.resolutions = [tuple(hw) for hw in resolutions]
        self.downsamplers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU()) for _ in resolutions[1:])
        self.down_outputs = nn.ModuleList(self._zero_conv(width, shape[0]) for shape in skips.down)
        self.mid_output = self._zero_conv(width, skips.mid[0])
        self.prediction_output = self._zero_conv(width, skips.out[0])
        self.skip_levels = [self.resolutions.index(tuple(shape[1:])) for shape in skips.down]
        self.mid_level = self.resolutions.index(tuple(skips.mid[1:]))

    @staticmethod
    def _zero_conv(width: int, channels: int) -> nn.Conv2d:
        conv = nn.Conv2d(width, channels, 1)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        return conv

    def forward(self, source_latents: torch.Tensor, timesteps: torch.Tensor, target_latents: torch.Tensor,
                target_timesteps: torch.Tensor) -> SkipResiduals:
        x = source_latents
        if tuple(x.shape[-2:]) != self.grid:
            x = F.interpolate(x, size=self.grid, mode="bilinear", align_corners=False)
        x = torch.cat([x, target_latents.to(x.dtype)], dim=1)

        def steps(t: torch.Tensor) -> torch.Tensor:
            return self.time_proj(t.expand(x.shape[0]) if t.ndim == 0 else t).to(x.dtype)

        time = self.time_embedding(steps(timesteps)) + self.target_time_embedding(steps(target_timesteps))
        features = self.stem_out(self.stem(x) + time[:, :, None, None])
        levels = [features]
        for downsample, size in zip(self.downsamplers, self.resolutions[1:]):
            features = downsample(features)
            if tuple(features.shape[-2:]) != size:
                features = F.interpolate(features, size=size, mode="bilinear", align_corners=False)
            levels.append(features)
        down = tuple(conv(levels[level]) for conv, level in zip(self.down_outputs, self.skip_levels))
        return SkipResiduals(down, self.mid_output(levels[self.mid_level]), self.prediction_output(levels[0]))


def direction_key(source: str, target: str) -> str:
    """The name of one direction in :class:`PairSpatialGuidance` (module names cannot hold dots)."""
    return f"{source}_to_{target}"


class PairSpatialGuidance(nn.Module):
    """A round's spatial guidance, both directions of its pair: ``path(source, target)`` is the
    :class:`SpatialGuidance` from ``source``'s latent into ``target``'s denoiser, or None where
    the pair has no spatial path that way (a text side, or ``width`` None: switched off)."""

    def __init__(self, pair: tuple[str, str], denoisers: dict[str, nn.Module],
                 latent_shapes: dict[str, tuple[int, ...]], width: int | None):
        super().__init__()
        paths = {}
        for target, source in (pair, pair[::-1]):
            if width is not None and supports_spatial_guidance(denoisers[target], latent_shapes[source]):
                down, mid = denoisers[target].skip_connection_shapes()
                paths[direction_key(source, target)] = SpatialGuidance(
                    tuple(latent_shapes[source]), SkipShapes(tuple(down), tuple(mid), tuple(latent_shapes[target])),
                    width)
        self.paths = nn.ModuleDict(paths)

    def path(self, source: str, target: str) -> SpatialGuidance | None:
        key = direction_key(source, target)
        return self.paths[key] if key in self.paths else None
