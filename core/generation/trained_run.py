"""The trained models of one run folder, loaded on first use and kept.

What the run can do comes from its plan (``plan.json``) and the stages that completed
(their records); generation needs a different subset for every task (text to MRI needs C_text, MRI's
denoiser and MRI's VAE; joint generation also needs each output's cross-guided
parts), so nothing is loaded until a task asks for it. The run's own
``config.yaml`` says how the models were built; only the device may differ.
"""

from __future__ import annotations

import functools
from pathlib import Path

import attrs
import torch
from torch import nn

from medm2g.core.config.run_config import RunConfig, load_run_config, with_overrides
from medm2g.core.diffusion.attention import configure_attention
from medm2g.core.diffusion.spatial_guidance import SpatialGuidance
from medm2g.core.errors import CheckpointError
from medm2g.core.graph.engine import ParamGroup, Part, Stage, StageKind, TrainingPlan, spatial_guidance_owner
from medm2g.core.io.checkpoints import read_json
from medm2g.core.training.autoencoding import load_vae
from medm2g.core.training.cross_guided import CrossGuidedSide, build_side, load_spatial_guidance
from medm2g.core.training.encoders import load_prompt_encoders, resolve_device
from medm2g.core.training.latent_diffusion import load_denoiser
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import load_run_plan
from medm2g.registry import ModalityRegistry


@attrs.define(eq=False)
class TrainedRun:
    """Models of a run folder on ``device``, each loaded once, all in eval mode without gradients."""

    registry: ModalityRegistry
    config: RunConfig
    layout: RunLayout
    device: torch.device

    @classmethod
    def open(cls, run_dir: Path | str, registry: ModalityRegistry, device: str | None = None) -> "TrainedRun":
        layout = RunLayout(run_dir)
        if not layout.config.is_file():
            raise CheckpointError(f"{layout.config}: not found; {layout.root} is not a medm2g run folder "
                                  f"(make one with `medm2g train GRAPH --out {layout.root}`)")
        config = load_run_config(layout.config)
        if device is not None:
            config = with_overrides(config, device=device)
        return cls(config.modalities(registry), config, layout, resolve_device(config.device))

    def _ready(self, module: nn.Module) -> nn.Module:
        return module.to(self.device).eval().requires_grad_(False)

    @functools.cached_property
    def tuned_guidance(self) -> dict[tuple[str, str], float]:
        """(condition modality, output) -> the guidance scale ``medm2g tune-guidance`` chose on validation
        subjects; empty when the run was never tuned (generation then uses the config's scale)."""
        path = self.layout.tuned_guidance
        if not path.is_file():
            return {}
        tasks = read_json(path).get("tasks", {})
        try:
            return {tuple(task.split(":", 1)): float(row["scale"]) for task, row in tasks.items()}
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: tasks.<source:target>.scale must be a number for every task "
                                  f"({type(error).__name__}: {error}); rerun `medm2g tune-guidance {self.layout.root}`"
                                  ) from None

    @functools.cache
    def encoder(self, modality: str) -> nn.Module:
        """C_M: maps a batch of M's samples into the aligned space."""
        return self._ready(load_prompt_encoders(self.registry, [modality], self.config, self.layout)[modality])

    @functools.cache
    def vae(self, modality: str) -> nn.Module:
        return self._ready(load_vae(self.registry, modality, self.config, self.layout))

    @functools.cache
    def denoiser(self, modality: str) -> nn.Module:
        """M's single-modality LDM denoiser, as its LDM stage left it."""
        denoiser = self._ready(load_denoiser(self.registry, modality, self.config, self.layout))
        configure_attention(denoiser, self.config.attention, self.device)
        return denoiser

    @functools.cache
    def cross_guided(self, modality: str) -> CrossGuidedSide:
        """M's denoiser with theta_c attached, and V_M, f_M, as its multi-flow round left them."""
        side = self._ready(build_side(self.registry, modality, self.config, self.layout, load_trained=True))
        configure_attention(side.denoiser, self.config.attention, self.device)
        return side

    @functools.cache
    def spatial_guidance(self, source: str, target: str) -> SpatialGuidance | None:
        """The spatial path from ``source``'s latent into ``target``'s denoiser that a completed round
        trained, or None (no round of that pair trained one, or it was switched off)."""
        for stage in self.plan.stages_of(StageKind.CROSS_GUIDED):
            owner = spatial_guidance_owner(stage.modalities)
            if (set(stage.modalities) == {source, target} and self.completed(stage)
                    and ParamGroup(owner, Part.SPATIAL_GUIDANCE) in stage.trains
                    and self.layout.spatial_guidance(owner).is_file()):
                pair = stage.modalities
                # the cross-guided denoisers the generator samples with anyway: only their skip shapes are read
                spatial = load_spatial_guidance(pair, {m: self.cross_guided(m).denoiser for m in pair}, self.registry,
                                                self.config, self.layout)
                return self._ready(spatial).path(source, target)
        return None

    @functools.cached_property
    def plan(self) -> TrainingPlan:
        """The plan the run was trained on, read back from its ``plan.json``."""
        return load_run_plan(self.layout, self.registry)

    def completed(self, stage: Stage) -> bool:
        """True when the stage wrote its record: its weights are final."""
        return self.layout.stage_record(stage).is_file()

    def _completed_groups(self, kind: StageKind) -> set[ParamGroup]:
        return {group for stage in self.plan.stages_of(kind) if self.completed(stage) for group in stage.trains}

    def translation_tasks(self) -> list[tuple[str, str, str]]:
        """(source, target, backend) of every task a completed translation stage can do: both directions
        of an edge between images, report -> image of a report-image edge (the plan's tasks)."""
        done = {(frozenset((edge.a, edge.b)), edge.backend) for stage, edge in self.plan.translation_stages()
                if self.completed(stage)}
        return [(task.source, task.target, task.backend) for task in self.plan.tasks
                if task.backend != "medm2g" and (frozenset((task.source, task.target)), task.backend) in done]

    def translatable(self, backend: str | None = None) -> list[tuple[str, str]]:
        """(source, target) of every direction a completed translation stage can do (of ``backend``'s
        edges only, when given), each once."""
        return list(dict.fromkeys((source, target) for source, target, by in self.translation_tasks()
                                  if backend in (None, by)))

    def translation_backend(self, source: str, target: str) -> str | None:
        """The backend of the first completed translation edge that does ``source`` -> ``target``."""
        return next((backend for s, t, backend in self.translation_tasks() if (s, t) == (source, target)), None)

    def generatable(self) -> list[str]:
        """Modalities whose VAE and LDM stages completed: the possible outputs."""
        trained = self._completed_groups(StageKind.VAE) | self._completed_groups(StageKind.LDM)
        return [m for m in self.registry
                if ParamGroup(m, Part.VAE) in trained and ParamGroup(m, Part.BACKBONE) in trained]

    def conditionable(self) -> list[str]:
        """Modalities in the aligned space whose alignment stages all completed: the possible conditions."""
        stages = self.plan.stages_of(StageKind.ALIGNMENT)
        return [m for m in self.registry if m in self.plan.aligned
                and all(self.completed(stage) for stage in stages if m in stage.modalities)]

    def jointly_generatable(self) -> list[str]:
        """Outputs whose cross-guided parts a completed round trained: those joint generation samples together."""
        trained = self._completed_groups(StageKind.CROSS_GUIDED)
        return [m for m in self.generatable() if ParamGroup(m, Part.CROSS_GUIDANCE) in trained]
