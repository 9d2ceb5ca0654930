"""Latent cross-guided alignment (section 3.4, eq. 5 and 6): V_B and f_B.

For a pair A-B, A's denoiser attends to ``V_B([z_t^B, f_B])``:

* ``z_t^B`` is B's noisy latent at the same step, turned into tokens: a spatial latent
  (C, H, W) is cut into patches (one token per patch), a text latent (768, 1, 1) is one
  token; each token gets B's timestep embedding added;
* ``f_B`` (:class:`Adaptation`) is a set of trainable context tokens initialised, as in
  Textual Inversion, from prompt embeddings C_B(x_B) of B's data passed through an
  embedding layer F_emb to A's context width (eq. 5);
* the context encoder ``V_B`` (:class:`ContextEncoder`) is a small transformer over
  the concatenation, projected to A's context width.

Nothing here knows a modality: shapes come from the specs' latent shapes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from medm2g.core.diffusion.attention import attend, standard_processor
from medm2g.core.optimisation import OptimiserSettings
from medm2g.core.structuring import fraction, one_of, positive

ROUND_TIMESTEPS = ("independent", "shared")


@attrs.frozen
class CrossGuidanceConfig(OptimiserSettings):
    """Sizes of V_B and f_B (``patch``: side of the latent patch per token) and the rounds' training.

    The paper trains the cross-attention layers with Adam, learning rate 1e-5 and weight
    decay 1e-4, on top of pretrained diffusers; these from-scratch defaults use 1e-4.

    ``timesteps``: ``shared`` is the paper's round, both latents noised to one step t, so V_B
    only ever sees B as noisy as A. ``independent`` (after UniDiffuser, Bao et al. 2023; beyond
    the paper) draws B's step on its own, and with probability ``clean_source`` takes B clean
    (t_B = 0): then X -> Y with X given attends to V_X of X's *clean* latent, every patch of it,
    instead of X noised to Y's step, where at high t nothing of X is left. Its guidance tokens are
    zeroed where the condition is dropped (``diffusion.condition_dropout``), so classifier-free
    guidance amplifies what V_X says too. Joint sampling is the case t_A = t_B either way.

    ``spatial``: a round between two imaging modalities also trains a spatial guidance each way
    (``core.diffusion.spatial_guidance``, beyond the paper; ``spatial_width`` channels), the
    source latent added where it lies to the target UNet's skip connections, so a translation keeps
    the patient's anatomy. ``false`` is the paper's round: its group is planned but empty. The
    path starts from nothing, unlike theta_c beside a trained attention, so it has a learning rate
    of its own (``spatial_learning_rate``).
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {"steps": 200, "batch_size": 16, "learning_rate": 1e-4, "weight_decay": 1e-4,
                                          "warmup_steps": 10, "checkpoint_every": 100}

    width: int = attrs.field(default=128, validator=positive)
    layers: int = attrs.field(default=1, validator=positive)
    heads: int = attrs.field(default=4, validator=positive)
    adaptation_tokens: int = attrs.field(default=4, validator=positive)
    patch: int = attrs.field(default=4, validator=positive)
    timesteps: str = attrs.field(default="independent", validator=one_of(ROUND_TIMESTEPS))
    clean_source: float = attrs.field(default=0.5, validator=fraction)
    spatial: bool = True
    spatial_width: int = attrs.field(default=32, validator=positive)
    spatial_learning_rate: float = attrs.field(default=3e-3, validator=positive)


class Adaptation(nn.Module):
    """f_B: ``tokens`` trainable context vectors of width ``width`` (eq. 5).

    ``from_embeddings`` initialises them from prompt embeddings of B's data through
    the embedding layer F_emb (a linear map embed_dim -> width that trains with them).
    """

    def __init__(self, tokens: int, embed_dim: int, width: int):
        super().__init__()
        self.embedding_layer = nn.Linear(embed_dim, width)  # F_emb
        self.seeds = nn.Parameter(torch.randn(tokens, embed_dim) * 0.02)

    @torch.no_grad()
    def initialise_from(self, embeddings: torch.Tensor, generator: torch.Generator) -> None:
        """Textual-Inversion initialisation: f_B starts at randomly sampled C_B(x_B)."""
        picks = torch.randint(0, embeddings.shape[0], (self.seeds.shape[0],), generator=generator)
        self.seeds.copy_(embeddings[picks.to(embeddings.device)].to(self.seeds.dtype))

    def forward(self, batch_size: int) -> torch.Tensor:
        """(batch_size, tokens, width)."""
        return self.embedding_layer(self.seeds).unsqueeze(0).expand(batch_size, -1, -1)


def _tokens(latents: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C * p * p) patches; 1x1 latents give one token of C."""
    batch, channels, height, width = latents.shape
    p = min(patch, height, width)
    if height % p or width % p:
        raise ValueError(f"latent grid {height}x{width} is not divisible into {p}x{p} patches")
    tokens = latents.unfold(2, p, p).unfold(3, p, p)  # B, C, H/p, W/p, p, p
    return tokens.permute(0, 2, 3, 1, 4, 5).reshape(batch, (height // p) * (width // p), channels * p * p)


class ContextEncoder(nn.Module):
    """V_B: B's noisy latent (with its timestep) and f_B -> context tokens (B, N + tokens, context_dim) for A."""

    def __init__(self, latent_shape: tuple[int, int, int], context_dim: int, config: CrossGuidanceConfig):
        super().__init__()
        channels, height, width = latent_shape
        p = min(config.patch, height, width)
        self.patch = config.patch
        self.input = nn.Linear(channels * p * p, config.width)
        self.positions = nn.Parameter(torch.zeros((height // p) * (width // p), config.width))
        self.time_proj = Timesteps(config.width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(config.width, config.width)
        layer = nn.TransformerEncoderLayer(config.width, config.heads, 4 * config.width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.output = nn.Sequential(nn.LayerNorm(config.width), nn.Linear(config.width, context_dim))

    def forward(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, adaptation: torch.Tensor) -> torch.Tensor:
        tokens = self.input(_tokens(noisy_latents, self.patch)) + self.positions
        timesteps = timesteps.expand(noisy_latents.shape[0]) if timesteps.ndim == 0 else timesteps
        time = self.time_embedding(self.time_proj(timesteps).to(tokens.dtype))[:, None]
        sequence = torch.cat([tokens + time, adaptation.to(tokens.dtype)], dim=1)
        return self.output(self.transformer(sequence))


class GuidanceAttention(nn.Module):
    """The cross-attention sub-layer theta_c added beside a denoiser's condition attention (eq. 6).

    It has its own query, key, value and output projections and attends from the
    denoiser's hidden states to the guidance tokens V_B(...). Its output projection
    starts at zero, so attaching it leaves a trained denoiser's output unchanged
    until the round trains it.
    """

    def __init__(self, hidden_dim: int, guidance_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.backend = "sdpa"  # or "xformers": core.diffusion.attention.use_attention sets it
        self.to_q = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.to_k = nn.Linear(guidance_dim, hidden_dim, bias=False)
        self.to_v = nn.Linear(guidance_dim, hidden_dim, bias=False)
        self.to_out = nn.Linear(hidden_dim, hidden_dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, hidden_states: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        batch, length, dim = hidden_states.shape
        heads = self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, heads, dim // heads).transpose(1, 2)

        query, key, value = split(self.to_q(hidden_states)), split(self.to_k(guidance)), split(self.to_v(guidance))
        attended = attend(query, key, value, self.backend)
        return self.to_out(attended.transpose(1, 2).reshape(batch, length, dim))


class CrossGuidedAttnProcessor(nn.Module):
    """A diffusers attention processor: the block's own cross-attention to its condition, plus
    :class:`GuidanceAttention` to the guidance tokens when a ``guidance`` argument is given."""

    def __init__(self, hidden_dim: int, guidance_dim: int, heads: int):
        super().__init__()
        self.condition = standard_processor("sdpa")
        self.guidance_attention = GuidanceAttention(hidden_dim, guidance_dim, heads)

    def use_backend(self, backend: str) -> None:
        self.condition = standard_processor(backend)
        self.guidance_attention.backend = backend

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 guidance: torch.Tensor | None = None):
        output = self.condition(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if guidance is None:
            return output
        flat = hidden_states if hidden_states.ndim == 3 else hidden_states.flatten(2).transpose(1, 2)
        guided = self.guidance_attention(flat, guidance.to(flat.dtype))
        return output + (guided if hidden_states.ndim == 3 else guided.transpose(1, 2).reshape(hidden_states.shape))


class GuidanceIgnoringProcessor:
    """For the denoiser's self-attention layers: the standard processor, accepting (and ignoring) ``guidance``
    so diffusers does not warn on every call."""

    def __init__(self):
        self.inner = standard_processor("sdpa")

    def use_backend(self, backend: str) -> None:
        self.inner = standard_processor(backend)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 guidance: torch.Tensor | None = None):
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def attach_cross_guidance(denoiser: nn.Module, guidance_dim: int) -> list[GuidanceAttention]:
    """Add a guidance sub-layer beside every cross-attention of ``denoiser`` (any module built from
    diffusers ``Attention`` blocks: the image UNet, the text diffuser); returns the sub-layers.

    Each becomes part of its attention module (as its processor), so the denoiser's
    state dict holds it; :func:`denoiser_parameter_groups` finds it again.
    """
    from diffusers.models.attention_processor import Attention

    added = []
    for module in list(denoiser.modules()):
        if not isinstance(module, Attention):
            continue
        if module.is_cross_attention:
            processor = CrossGuidedAttnProcessor(module.inner_dim, guidance_dim, module.heads)
            module.set_processor(processor)
            added.append(processor.guidance_attention)
        else:
            module.set_processor(GuidanceIgnoringProcessor())
    if not added:
        raise ValueError(f"{type(denoiser).__name__} has no cross-attention to add a guidance sub-layer beside")
    return added


def denoiser_parameter_groups(denoiser: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The denoiser's parameters split into the plan's groups (``Part`` values): ``cross_guidance``
    (the added sub-layers), ``condition_attention`` (the cross-attention to the prompt embedding)
    and ``backbone`` (everything else). Every parameter is in exactly one group."""
    from diffusers.models.attention_processor import Attention

    guidance = {id(p) for m in denoiser.modules() if isinstance(m, GuidanceAttention) for p in m.parameters()}
    condition = {
        id(p)
        for m in denoiser.modules() if isinstance(m, Attention) and m.is_cross_attention
        for p in m.parameters() if id(p) not in guidance
    }
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], "condition_attention": [], "cross_guidance": []}
    for parameter in denoiser.parameters():
        key = "cross_guidance" if id(parameter) in guidance else (
            "condition_attention" if id(parameter) in condition else "backbone")
        groups[key].append(parameter)
    return groups
