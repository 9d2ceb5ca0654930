"""Anatomy-pathology prompting in a run: the ``prompting`` section of a run config.

``vocabulary`` names an installed vocabulary (the text plugin ships ``head`` and ``chest``);
``generator`` who writes prompts: ``grammar`` (deterministic, offline), a writer a plugin registers,
or a folder holding a local language model. ``condition_on_prompts`` makes MedM2G's report encoder
read each report's prompt instead of the report itself, in alignment, in the LDM and round stages
and in generation alike (the ablation's "prompting" row); the ``vq-ar`` backend always reads prompts.
"""

from __future__ import annotations

import attrs


def _name(instance, attribute, value) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must be a non-empty name, got {value!r}")


@attrs.frozen
class PromptingConfig:
    vocabulary: str = attrs.field(default="head", validator=_name)
    generator: str = attrs.field(default="grammar", validator=_name)
    condition_on_prompts: bool = False
