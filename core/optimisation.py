"""How every training stage optimises, as one record: :class:`OptimiserSettings`.

Alignment, the VAEs, the LDMs and the rounds all train with AdamW, a linear warm-up then cosine
decay, and a checkpoint every so many steps. Their run-config sections (``alignment``, ``vae``,
``ldm``, ``cross_guidance``) are each an :class:`OptimiserSettings` with the stage's own fields
added, so those six fields are declared, validated and documented once; a section only states its
defaults (``DEFAULTS``), and its YAML stays flat (``alignment: {steps: 80}``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterable

import attrs
import torch

from medm2g.core.structuring import at_least_two, non_negative, positive

OPTIMISER_FIELDS = ("steps", "batch_size", "learning_rate", "weight_decay", "warmup_steps", "checkpoint_every")


def _section_default(name: str) -> Any:
    """The field's default as the section (a subclass) states it in its ``DEFAULTS``."""
    return attrs.Factory(lambda self: type(self).DEFAULTS[name], takes_self=True)


@attrs.frozen
class OptimiserSettings:
    """AdamW (Adam for the rounds, as the paper) for ``steps`` optimiser steps of ``batch_size`` samples (whatever the processes and
    micro-batches, see ``acceleration``), its learning rate warmed up linearly over
    ``warmup_steps`` to ``learning_rate`` then decayed on a cosine; decoupled ``weight_decay``;
    the stage's state saved every ``checkpoint_every`` steps so a stopped run resumes there."""

    DEFAULTS: ClassVar[dict[str, Any]] = {"steps": 100, "batch_size": 16, "learning_rate": 1e-4, "weight_decay": 0.0,
                                          "warmup_steps": 10, "checkpoint_every": 100}

    steps: int = attrs.field(default=_section_default("steps"), validator=positive)
    batch_size: int = attrs.field(default=_section_default("batch_size"), validator=at_least_two)
    learning_rate: float = attrs.field(default=_section_default("learning_rate"), validator=positive)
    weight_decay: float = attrs.field(default=_section_default("weight_decay"), validator=non_negative)
    warmup_steps: int = attrs.field(default=_section_default("warmup_steps"), validator=non_negative)
    checkpoint_every: int = attrs.field(default=_section_default("checkpoint_every"), validator=positive)

    def optimiser(self, parameters: Iterable, learning_rate: float | None = None, *,
                  decoupled_weight_decay: bool = True) -> torch.optim.Optimizer:
        """The stage's optimiser over ``parameters``: AdamW, or Adam with L2 weight decay where a
        stage follows the paper's "Adam with weight decay" (the rounds); ``learning_rate`` where a
        stage has a second one (the text LDM's)."""
        kind = torch.optim.AdamW if decoupled_weight_decay else torch.optim.Adam
        return kind(parameters, lr=self.learning_rate if learning_rate is None else learning_rate,
                    weight_decay=self.weight_decay)
