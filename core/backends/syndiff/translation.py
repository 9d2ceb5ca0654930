"""The ``syndiff`` generation backend: a run's translation edge, MRI to CT (say) in T large steps.

It answers the same :class:`GenerationRequest` as medm2g's own backend, so ``medm2g
generate`` and ``medm2g eval`` need nothing else; what SynDiff cannot do (generate
unconditioned, jointly, from a report, between modalities without a trained edge) is
refused before any sampling, naming what the run can translate.
"""

from __future__ import annotations

from typing import Sequence

import torch

from medm2g.core.backends.syndiff.model import SynDiff
from medm2g.core.backends.syndiff.stage import load_syndiff
from medm2g.core.errors import ConfigError
from medm2g.core.generation.backends import GeneratedSample, GenerationRequest
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.training.encoders import modality_seed


class SynDiffTranslator:
    """Each row: the EMA diffusive generator of the output, conditioned on the row's source image,
    from noise in the schedule's T steps; row i is reproducible alone from its seed."""

    def __init__(self, run: TrainedRun):
        self.run = run
        self._models: dict[tuple[str, str], SynDiff] = {}

    def model(self, source: str, target: str) -> SynDiff:
        """The SynDiff the run's translation edge of the two modalities trained (either direction), loaded once."""
        key = tuple(sorted((source, target)))
        if key not in self._models:
            model = load_syndiff(self.run.registry, source, target, self.run.config, self.run.layout)
            self._models[key] = model.to(self.run.device).eval().requires_grad_(False)
        return self._models[key]

    def check(self, request: GenerationRequest) -> tuple[str, str]:
        """(source, target) of a request SynDiff can answer, or a :class:`ConfigError` saying why not."""
        root, pairs = self.run.layout.root, self.run.translatable("syndiff")
        can = ", ".join(f"{s}->{t}" for s, t in pairs) or "nothing (no backend: syndiff pair was trained)"
        if request.joint or len(request.outputs) != 1:
            raise ConfigError(f"{root}: syndiff translates to one modality at a time (--to one modality, no --joint)")
        sources = {condition.modality for condition in request.conditions}
        if len(sources) != 1:
            raise ConfigError(f"{root}: syndiff translates an image: give --from with images of one modality "
                              f"(it can translate: {can})")
        (source,), (target,) = sources, request.outputs
        if (source, target) not in pairs:
            raise ConfigError(f"{root}: no syndiff model for {source}->{target} (it can translate: {can})")
        steps = self.run.config.syndiff.steps
        if request.steps is not None and request.steps != steps:
            raise ConfigError(f"syndiff samples in the {steps} steps it was trained for; --steps {request.steps} "
                              f"would need another model (leave --steps out)")
        if request.guidance_scale is not None:
            raise ConfigError("syndiff has no classifier-free guidance: leave --guidance out")
        return source, target

    def describe(self, request: GenerationRequest) -> dict:
        source, target = self.check(request)
        return {"translation": f"{source}->{target}", "steps": self.run.config.syndiff.steps,
                "weights": "EMA of the diffusive generator"}

    def generate(self, request: GenerationRequest) -> list[GeneratedSample]:
        source, target = self.check(request)
        rows = request.rows()
        seeds = [request.row_seed(i) for i in range(len(rows))]
        translated = translate_images(self.model(source, target), target,
                                      [request.conditions[condition].sample for condition, _ in rows], seeds,
                                      self.run.device, request.batch_size)
        return [GeneratedSample(condition, index, seed, {target: image})
                for (condition, index), seed, image in zip(rows, seeds, translated)]


@torch.no_grad()
def translate_images(model: SynDiff, target: str, images: Sequence[torch.Tensor], seeds: Sequence[int],
                     device: torch.device, batch_size: int = 16) -> list[torch.Tensor]:
    """``target`` images from source images, image i drawn from its own seed (reproducible alone)."""
    model = model.to(device)
    translated = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack(list(images[start:start + batch_size])).to(device)
        generators = [torch.Generator().manual_seed(modality_seed(seed, target)) for seed in seeds[start:start + batch_size]]
        translated += list(model.translate(batch, target, generators).float().cpu())
    return translated
