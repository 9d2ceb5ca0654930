"""Which attention kernel the denoisers use: PyTorch SDPA, or xformers' memory-efficient attention.

SDPA (``torch.nn.functional.scaled_dot_product_attention``) is the default everywhere: it has
CPU kernels and picks flash or memory-efficient kernels on a GPU by itself. xformers is used
when asked for (``attention: xformers`` in the run config) or, with ``auto``, whenever CUDA and
the optional ``xformers`` package are both present; it has no CPU kernels. When it cannot be
used, the choice falls back to SDPA and says why in the log, so a run never fails for want of
an optional kernel.
"""

from __future__ import annotations

import importlib.util
import logging

import attrs
import torch
from torch import nn

logger = logging.getLogger("medm2g")

ATTENTION_BACKENDS = ("auto", "sdpa", "xformers")


@attrs.frozen
class AttentionChoice:
    """The kernel in use and why (the reason is what the log says)."""

    name: str  # "sdpa" or "xformers"
    reason: str


def xformers_available() -> bool:
    return importlib.util.find_spec("xformers") is not None


def choose_attention(requested: str, device: torch.device) -> AttentionChoice:
    """``requested`` (auto, sdpa or xformers) resolved for ``device``, falling back to SDPA where
    xformers cannot run."""
    if requested not in ATTENTION_BACKENDS:
        raise ValueError(f"attention: expected one of {', '.join(ATTENTION_BACKENDS)}, got {requested!r}")
    if requested == "sdpa":
        return AttentionChoice("sdpa", "asked for")
    problem = ("the xformers package is not installed (pip install 'medm2g[gpu]')" if not xformers_available()
               else f"xformers has no kernels for {device.type}" if device.type != "cuda" else None)
    if problem is None:
        return AttentionChoice("xformers", "asked for" if requested == "xformers" else "CUDA and xformers present")
    if requested == "xformers":
        logger.warning("attention: xformers was asked for, using PyTorch SDPA instead: %s", problem)
    return AttentionChoice("sdpa", problem)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Multi-head attention of (batch, heads, length, head_dim) tensors, by ``backend``."""
    if backend == "xformers":
        import xformers.ops

        out = xformers.ops.memory_efficient_attention(*(x.transpose(1, 2).contiguous() for x in (query, key, value)))
        return out.transpose(1, 2)
    return nn.functional.scaled_dot_product_attention(query, key, value)


def standard_processor(backend: str):
    """diffusers' attention processor for ``backend``."""
    from diffusers.models.attention_processor import AttnProcessor2_0, XFormersAttnProcessor

    return XFormersAttnProcessor() if backend == "xformers" else AttnProcessor2_0()


def use_attention(model: nn.Module, choice: AttentionChoice) -> AttentionChoice:
    """Switch every diffusers attention block of ``model`` (and the cross-guidance sub-layers
    inside them) to ``choice``; returns it. Processors that wrap a standard one (medm2g's
    cross-guided ones) keep their wrapping and swap only the kernel inside."""
    from diffusers.models.attention_processor import Attention

    for module in model.modules():
        if not isinstance(module, Attention):
            continue
        processor = module.processor
        if hasattr(processor, "use_backend"):
            processor.use_backend(choice.name)
        else:
            module.set_processor(standard_processor(choice.name))
    return choice


def configure_attention(model: nn.Module, requested: str, device: torch.device) -> AttentionChoice:
    """Choose the kernel for ``device``, switch ``model`` to it and log the choice with its reason."""
    choice = use_attention(model, choose_attention(requested, device))
    logger.info("attention: %s for %s (%s)", choice.name, type(model).__name__, choice.reason)
    return choice
