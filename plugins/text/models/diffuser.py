"""The text diffuser: fully connected residual blocks on (latent_dim, 1, 1) text latents.

A text latent has no spatial grid, so the "UNet" of the text LDM is a stack of
fully connected residual blocks with timestep embedding, each followed by
cross-attention to the condition (the design the paper inherits from Versatile
Diffusion and CoDi). Timestep embeddings and attention are diffusers' own blocks.
"""

from __future__ import annotations

import attrs
import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn
from torch.utils.checkpoint import checkpoint


@attrs.frozen
class TextDiffuserConfig:
    width: int
    depth: int  # the paper's text diffuser has depth 2
    heads: int = 4
    dropout: float = 0.0


class FullyConnectedResBlock(nn.Module):
    """norm-SiLU-linear, add the timestep embedding, norm-SiLU-dropout-linear, residual."""

    def __init__(self, width: int, time_dim: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, width))
        self.time_layers = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, width))
        self.out_layers = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Dropout(dropout), nn.Linear(width, width))
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)

    def forward(self, hidden: torch.Tensor, time_embedding: torch.Tensor) -> torch.Tensor:
        return hidden + self.out_layers(self.in_layers(hidden) + self.time_layers(time_embedding))


class ConditionAttention(nn.Module):
    """Pre-norm cross-attention of the single latent token to the condition sequence."""

    def __init__(self, width: int, context_dim: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attention = Attention(query_dim=width, cross_attention_dim=context_dim, heads=heads, dim_head=width // heads)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
        extra = {"guidance": guidance} if guidance is not None else {}
        return hidden + self.attention(self.norm(hidden)[:, None], encoder_hidden_states=context, **extra)[:, 0]


class TextDiffuser(nn.Module):
    """``forward(latents (B, D, 1, 1), timesteps (B,), context (B, L, C)) -> noise (B, D, 1, 1)``.

    ``enable_gradient_checkpointing()`` (the diffusers name, which the training engine calls)
    recomputes each block's activations in the backward pass instead of keeping them."""

    _supports_gradient_checkpointing = True

    def __init__(self, latent_dim: int, context_dim: int, config: TextDiffuserConfig):
        super().__init__()
        self.gradient_checkpointing = False
        time_dim = 4 * config.width
        self.time_proj = Timesteps(config.width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(config.width, time_dim)
        self.input = nn.Linear(latent_dim, config.width)
        self.blocks = nn.ModuleList(
            FullyConnectedResBlock(config.width, time_dim, config.dropout) for _ in range(config.depth)
        )
        self.attentions = nn.ModuleList(ConditionAttention(config.width, context_dim, config.heads) for _ in range(config.depth))
        self.output = nn.Sequential(nn.LayerNorm(config.width), nn.SiLU(), nn.Linear(config.width, latent_dim))
        nn.init.zeros_(self.output[-1].weight)
        nn.init.zeros_(self.output[-1].bias)

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                guidance: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.input(latents.flatten(1))
        timesteps = timesteps.expand(latents.shape[0]) if timesteps.ndim == 0 else timesteps
        time_embedding = self.time_embedding(self.time_proj(timesteps).to(hidden.dtype))
        for block, attention in zip(self.blocks, self.attentions):
            if self.gradient_checkpointing and torch.is_grad_enabled():
                hidden = checkpoint(block, hidden, time_embedding, use_reentrant=False)
                hidden = checkpoint(attention, hidden, context, guidance, use_reentrant=False)
            else:
                hidden = attention(block(hidden, time_embedding), context, guidance)
        return self.output(hidden)[:, :, None, None]

    def enable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = True
