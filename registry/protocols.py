"""The models a modality plugin builds, as ``typing.Protocol`` s: what medm2g calls on them.

The hooks :func:`~medm2g.registry.hookspecs.medm2g_prompt_encoder`,
:func:`~medm2g.registry.hookspecs.medm2g_vae` and :func:`~medm2g.registry.hookspecs.medm2g_unet`
return ``torch.nn.Module`` s (the trainer needs their parameters, state dicts, ``train``/``eval``
and ``to(device)``) that also satisfy :class:`PromptEncoder`, :class:`LatentVAE` and
:class:`Denoiser`. The protocols are ``runtime_checkable``, so ``isinstance(vae, LatentVAE)``
checks that the methods exist (not their signatures); :func:`missing_members` names the ones
that do not, and the conformance checks (:mod:`medm2g.registry.conformance`) call every one.

Samples are in model space (:mod:`medm2g.registry.hookspecs`): a ``Batch`` is a float tensor
(B, C, H, W) in [-1, 1] for imaging modalities (a volume trains slice-wise, so its batches are
slices too) and a ``list[str]`` for text.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Union, runtime_checkable

if TYPE_CHECKING:  # torch is heavy; the protocols only name its types.
    import torch

Batch = Union["torch.Tensor", "list[str]"]
"""A batch of model-space samples: (B, C, H, W) in [-1, 1], or B reports."""


@runtime_checkable
class PromptEncoder(Protocol):
    """C_M, the modality's prompt encoder (paper, section 3.2): a batch to the shared space.

    ``forward(batch)`` returns (B, embed_dim) embeddings; the alignment stage trains it with
    InfoNCE (eq. 3) and, for imaging modalities, the visual invariant (eq. 4), and the LDM stages
    condition every denoiser on its (frozen) output.
    """

    def forward(self, batch: Batch) -> "torch.Tensor":
        """(B, embed_dim) embeddings of ``batch``."""


@runtime_checkable
class LatentVAE(Protocol):
    """The modality's VAE: samples to latents (B, *spec.latent_shape) and back.

    Latents are *scaled*: ``encode`` multiplies by :attr:`scaling_factor` and ``decode`` divides
    by it, so the diffusion model sees roughly unit-variance latents. The VAE stage trains with
    :meth:`training_loss`, then calibrates the scale from data (``set_scaling_factor(1.0)``, encode,
    ``set_scaling_factor(1 / std)``); a trained run reloads it with ``set_scaling_factor``.

    Optional, and found with ``hasattr``: :class:`PosteriorSampler` (``posterior`` and
    ``sample_latents``, which let the latent cache encode each sample once and draw each
    sample's latent with its own generator) and :class:`ExportsPretrained`.
    """

    def encode(self, batch: Batch, generator: "torch.Generator | None" = None) -> "torch.Tensor":
        """A scaled latent (B, *latent_shape) drawn from q(z | batch) with ``generator``; the same
        generator state gives the same latent."""

    def decode(self, latents: "torch.Tensor") -> Batch:
        """Scaled latents back to samples: (B, C, H, W) in [-1, 1], or B reports."""

    def training_loss(self, batch: Batch, generator: "torch.Generator | None",
                      kl_weight: float) -> "tuple[torch.Tensor, dict[str, float]]":
        """The VAE stage's loss on one batch: a scalar tensor to minimise, and the numbers to log
        by name. Posterior draws come from ``generator`` (one per micro-batch)."""

    @property
    def scaling_factor(self) -> float:
        """The latent scale; 1.0 until the VAE stage calibrates it."""

    def set_scaling_factor(self, value: float) -> None:
        """Set the latent scale (kept where a saved VAE can be reloaded with it)."""


@runtime_checkable
class PosteriorSampler(Protocol):
    """Optional for a :class:`LatentVAE`: the posterior and the draw from it, separately.

    ``sample_latents(*posterior(batch), generator)`` must equal ``encode(batch, generator)``:
    the latent cache keeps the posterior and draws from it, in place of ``encode``.
    """

    def posterior(self, batch: Batch) -> "tuple[torch.Tensor, torch.Tensor]":
        """Mean and log-variance of q(z | batch), unscaled."""

    def sample_latents(self, mean: "torch.Tensor", logvar: "torch.Tensor",
                       generator: "torch.Generator | None" = None) -> "torch.Tensor":
        """A scaled latent (B, *latent_shape) drawn from the posterior with ``generator``."""


@runtime_checkable
class ExportsPretrained(Protocol):
    """Optional for a VAE or a denoiser: a folder other tools load (diffusers' ``from_pretrained``)."""

    def export_pretrained(self, folder: "Path | str") -> None:
        """Write the model (config and weights) into ``folder``."""


@runtime_checkable
class Denoiser(Protocol):
    """The "UNet" of the modality's latent diffusion model: noisy latents to the predicted noise.

    ``context`` is (B, L, context_dim): the denoiser cross-attends to it. medm2g passes the
    condition's prompt embedding C(x) as one token, L = 1, zeros for the null condition of
    classifier-free guidance (:func:`medm2g.core.diffusion.conditional.condition_context`);
    a denoiser must not depend on L.

    Its cross-attention is built from diffusers ``Attention`` blocks, and ``forward`` passes
    ``guidance`` to them as ``cross_attention_kwargs={"guidance": guidance}`` when it is not
    None: the multi-flow rounds (section 3.4, eq. 6) set a processor holding the sub-layer
    theta_c beside every cross-attention
    (:func:`medm2g.core.diffusion.cross_guidance.attach_cross_guidance`), and that processor
    attends to ``guidance``, the tokens V_B([z_t^B, f_B]) of shape (B, N, guidance_dim).
    Without attached sub-layers ``guidance`` is None and the denoiser works as a plain one.

    Optional: ``enable_gradient_checkpointing()`` (the diffusers name) and
    :class:`ExportsPretrained`; and, for an imaging denoiser whose rounds with another imaging
    modality should keep the source's anatomy, ``skip_connection_shapes()`` with a
    ``skip_residuals`` argument to ``forward`` (see ``core.diffusion.spatial_guidance``; the
    built-in image UNet has both). Without them the pair's spatial guidance is left out.
    """

    def forward(self, latents: "torch.Tensor", timesteps: "torch.Tensor", context: "torch.Tensor",
                guidance: "torch.Tensor | None" = None) -> "torch.Tensor":
        """The noise (or velocity) prediction, shaped like ``latents`` (B, *latent_shape);
        ``timesteps`` are integers (B,)."""


def missing_members(obj: object, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks (for an error message; empty when it has all).

    For :class:`Denoiser`, a ``forward`` without a ``guidance`` parameter counts as missing
    ``forward(..., guidance)``: every ``nn.Module`` has a ``forward``, so presence alone says nothing.
    """
    import inspect

    names = [name for name in _protocol_members(protocol) if not hasattr(obj, name)]
    if protocol is Denoiser and "forward" not in names:
        try:
            parameters = inspect.signature(obj.forward).parameters
        except (TypeError, ValueError):
            parameters = {}
        if "guidance" not in parameters:
            names.append("forward(..., guidance)")
    return names


def _protocol_members(protocol: type) -> list[str]:
    return sorted(
        name for name in vars(protocol)
        if not name.startswith("_") and (callable(vars(protocol)[name]) or isinstance(vars(protocol)[name], property))
    )
