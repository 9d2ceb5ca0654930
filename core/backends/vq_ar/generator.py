"""The ``vq-ar`` generation backend: a report to an image through its prompt, key patches and tokens.

It answers the same :class:`GenerationRequest` as the other backends, so ``medm2g generate --backend
vq-ar`` and ``medm2g eval`` need nothing else. A report becomes its anatomy-pathology prompt (by the
run's writer, the grammar unless ``prompting.generator`` names another; only vocabulary words
either way), the alignment picks each term's key patches, the
transformer draws the image's tokens (row i from its own seed alone) and the codebook decodes them.
What it cannot do (an image condition, joint outputs, guidance, a step count) is refused before any
sampling.
"""

from __future__ import annotations

import torch

from medm2g.core.backends.vq_ar.model import VQAutoregressive
from medm2g.core.backends.vq_ar.stage import BACKEND, edge_prompts, load_trained_vq_ar
from medm2g.core.errors import ConfigError
from medm2g.core.generation.backends import GeneratedSample, GenerationRequest
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.prompting.for_run import RunPrompts
from medm2g.core.training.encoders import modality_seed


class VQArGenerator:
    def __init__(self, run: TrainedRun):
        self.run = run
        self._models: dict[tuple[str, str], VQAutoregressive] = {}
        self._prompts: RunPrompts | None = None

    @property
    def run_prompts(self) -> RunPrompts:
        """The run's prompt writer, made once (a language model writer loads once)."""
        if self._prompts is None:
            self._prompts = edge_prompts(self.run.registry, self.run.config)
        return self._prompts

    def model(self, source: str, target: str) -> VQAutoregressive:
        key = (source, target)
        if key not in self._models:
            self._models[key] = load_trained_vq_ar(self.run.registry, source, target, self.run.config,
                                                   self.run.layout).to(self.run.device)
        return self._models[key]

    def check(self, request: GenerationRequest) -> tuple[str, str]:
        root, pairs = self.run.layout.root, self.run.translatable(BACKEND)
        can = ", ".join(f"{s}->{t}" for s, t in pairs) or "nothing (no backend: vq-ar pair was trained)"
        if request.joint or len(request.outputs) != 1:
            raise ConfigError(f"{root}: vq-ar generates one image modality at a time (--to one modality, no --joint)")
        sources = {condition.modality for condition in request.conditions}
        if len(sources) != 1:
            raise ConfigError(f"{root}: vq-ar generates an image from a report: give --from reports ({can})")
        (source,), (target,) = sources, request.outputs
        if (source, target) not in pairs:
            raise ConfigError(f"{root}: no vq-ar model for {source}->{target} (it can generate: {can})")
        if request.steps is not None:
            raise ConfigError("vq-ar draws one token per grid position, not diffusion steps: leave --steps out")
        if request.guidance_scale is not None:
            raise ConfigError("vq-ar has no classifier-free guidance: leave --guidance out")
        return source, target

    def describe(self, request: GenerationRequest) -> dict:
        source, target = self.check(request)
        settings = self.run.config.vq_ar
        return {"generation": f"{source}->{target}", "prompts": self.prompts(request),
                "vocabulary": self.run.config.prompting.vocabulary,
                "prompt_writer": self.run.config.prompting.generator, "top_k": settings.top_k, "temperature": settings.temperature}

    def prompts(self, request: GenerationRequest) -> list[str]:
        """Each condition's prompt, as the transformer reads it (for provenance and the page)."""
        source, target = self.check(request)
        self.model(source, target)  # the trained model must be there, as generation needs it
        return [self.run_prompts.prompt(str(c.sample)).text for c in request.conditions]

    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> list[GeneratedSample]:
        source, target = self.check(request)
        model, settings = self.model(source, target), self.run.config.vq_ar
        prompts = self.run_prompts
        conditions = model.prompt_conditions([str(c.sample) for c in request.conditions], prompts)
        rows = request.rows()
        samples = []
        for start in range(0, len(rows), request.batch_size):
            chunk = rows[start:start + request.batch_size]
            seeds = [request.row_seed(start + i) for i in range(len(chunk))]
            tokens, masks = model.conditioning([conditions[c] for c, _ in chunk], self.run.device)
            generators = [torch.Generator().manual_seed(modality_seed(seed, target)) for seed in seeds]
            drawn = model.transformer.sample(tokens, masks, generators, settings.top_k, settings.temperature)
            grid = model.codebook.grid
            images = model.codebook.decode(drawn.view(-1, grid, grid).to(self.run.device)).float().cpu()
            samples += [GeneratedSample(c, k, seed, {target: image})
                        for (c, k), seed, image in zip(chunk, seeds, images)]
        return samples
