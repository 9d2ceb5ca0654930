"""The one rule for what a stage trains: its plan's ``trains`` groups, and nothing else.

Every stage kind names its models' parameters by the plan's groups (``ct.vae``,
``ct.backbone``, ``ct.cross_guidance``, ...) and asks :func:`trained_parameters` for the
optimizer's list. Everything else is frozen (no gradient, so no ``.grad`` and no optimizer
state), and a plan that names a group the models do not have, or models with groups the
plan never mentions, is an error rather than a silent choice.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from torch import nn

from medm2g.core.errors import PluginError
from medm2g.core.graph.engine import ParamGroup, Stage


def trained_parameters(stage: Stage, groups: Mapping[ParamGroup, Iterable[nn.Parameter]]) -> list[nn.Parameter]:
    """Switch gradients on for ``stage.trains`` and off for every other group; return the trained
    parameters in the plan's order. ``groups`` maps each group the stage's models hold to its
    parameters; a group may be empty (a denoiser before cross-guidance is attached)."""
    groups = {group: list(parameters) for group, parameters in groups.items()}
    missing = [str(group) for group in stage.trains if group not in groups]
    if missing:
        raise PluginError(f"stage {stage.index} ({stage.title}) trains {', '.join(missing)}, but its models have "
                          f"no such group (they have: {', '.join(str(g) for g in groups) or 'none'})")
    unplanned = [str(group) for group in groups if group not in stage.trains and group not in stage.frozen
                 and groups[group] and group.modality in stage.modalities]
    if unplanned:
        raise PluginError(f"stage {stage.index} ({stage.title}): the plan neither trains nor freezes "
                          f"{', '.join(unplanned)}")
    trained = set(stage.trains)
    for group, parameters in groups.items():
        for parameter in parameters:
            parameter.requires_grad_(group in trained)
    return [parameter for group in stage.trains for parameter in groups[group]]
