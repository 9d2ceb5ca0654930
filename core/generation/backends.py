"""Generation backends: what turns conditions into samples for a trained run.

MedM2G's own backend (:class:`CrossGuidedGenerator`) samples each output's latent
diffusion model conditioned on the condition's prompt embedding C_X(x) in the aligned
space, so any modality with an aligned encoder can drive any modality with a
denoiser, including pairs never trained together (text to MRI). Where both the
condition's and the output's modality have cross-guided parts from the multi-flow
rounds, the output's denoiser also attends through theta_c to V_X([z_t^X, f_X]) of the
*condition's* latent, encoded by X's VAE and noised to each step t as in training
(section 3.4's cross-condition; ``cross_guided=False`` turns it off). Joint generation
samples several outputs in lockstep, each output's denoiser attending through its
theta_c sub-layers to V_M([z_t^M, f_M]) of every *other* output's current latent
(the paper's figure 4c). Other backends (an adversarial diffusion for unpaired
translation, say) register under their own name through the ``medm2g_backends`` hook
and implement the same :class:`GenerationBackend` protocol, so the CLI and the writers stay unchanged.
"""

from __future__ import annotations

from typing import Mapping, Protocol

import attrs
import torch

from medm2g.core.diffusion.conditional import condition_context
from medm2g.core.diffusion.schedule import guided, sample_jointly, sampling_scheduler
from medm2g.core.errors import ConfigError
from medm2g.core.generation.conditions import Condition, embed_conditions
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.structuring import positive
from medm2g.core.training.encoders import modality_seed
from medm2g.registry import ModalityKind


@attrs.frozen
class GenerationRequest:
    """What to generate. No conditions means unconditional sampling; ``joint`` samples the
    outputs together (cross-guided) rather than each on its own. ``steps`` defaults to the run
    config's; ``guidance_scale`` to the scale tuned for the task on validation subjects, else the
    config's (:meth:`CrossGuidedGenerator.guidance_scales`)."""

    outputs: tuple[str, ...] = attrs.field(converter=tuple)
    conditions: tuple[Condition, ...] = attrs.field(default=(), converter=tuple)
    samples_per_condition: int = attrs.field(default=1, validator=positive)
    seed: int = 0
    joint: bool = False
    steps: int | None = attrs.field(default=None, validator=positive)
    guidance_scale: float | None = None
    batch_size: int = attrs.field(default=8, validator=positive)
    cross_guided: bool = True

    def rows(self) -> list[tuple[int | None, int]]:
        """(condition index or None, sample index) of every generated row, in output order."""
        conditions = range(len(self.conditions)) if self.conditions else [None]
        return [(c, k) for c in conditions for k in range(self.samples_per_condition)]

    def row_seed(self, row: int) -> int:
        """Row i's seed: regenerating it alone with ``seed=row_seed(i)`` gives the same sample."""
        return self.seed + row


@attrs.frozen
class GeneratedSample:
    """One row: the condition it came from (None when unconditional), its seed and one sample per output."""

    condition: int | None
    index: int
    seed: int
    outputs: Mapping[str, torch.Tensor | str]


class GenerationBackend(Protocol):
    def generate(self, request: GenerationRequest) -> list[GeneratedSample]:
        ...

    def describe(self, request: GenerationRequest) -> dict:
        """What ``generation.json`` should record about how this backend answers ``request``."""
        ...


class CrossGuidedGenerator:
    """MedM2G: latent diffusion per modality, conditioned through the aligned space, cross-guided when joint."""

    def __init__(self, run: TrainedRun):
        self.run = run

    def check(self, request: GenerationRequest) -> None:
        """Refuse, before any sampling, what this run cannot do, naming what it can."""
        can_generate, can_condition = self.run.generatable(), self.run.conditionable()
        by_backend: dict[str, list[str]] = {}
        for source, target in self.run.translatable():
            by_backend.setdefault(self.run.translation_backend(source, target), []).append(f"{source}->{target}")
        translations = "; ".join(f"{', '.join(pairs)} (--backend {name})" for name, pairs in by_backend.items())
        elsewhere = f"; its translation edges do {translations}" if translations else ""
        for modality in request.outputs:
            if modality not in can_generate:
                raise ConfigError(f"{self.run.layout.root}: cannot generate {modality!r}: this run has no trained VAE and "
                                  f"denoiser for it (it can generate: {', '.join(can_generate) or 'nothing'}{elsewhere})")
        for condition in request.conditions:
            if condition.modality not in can_condition:
                raise ConfigError(f"{self.run.layout.root}: cannot condition on {condition.modality!r}: no aligned "
                                  f"encoder (it can condition on: {', '.join(can_condition) or 'nothing yet'})")
        if len(set(request.outputs)) != len(request.outputs):
            raise ConfigError(f"outputs name a modality twice: {', '.join(request.outputs)}")
        if request.joint:
            if len(request.outputs) < 2:
                raise ConfigError("joint generation needs at least two outputs")
            joint = self.run.jointly_generatable()
            missing = [m for m in request.outputs if m not in joint]
            if missing:
                raise ConfigError(f"{self.run.layout.root}: {', '.join(missing)} cannot be generated jointly: no "
                                  f"cross-guided parts from a multi-flow round (jointly generatable: "
                                  f"{', '.join(joint) or 'none yet'})")

    def generate(self, request: GenerationRequest) -> list[GeneratedSample]:
        self.check(request)
        indexed = list(enumerate(request.rows()))
        # each condition is embedded once, however many batches its rows fall into
        embedded = (embed_conditions(list(request.conditions), self.run.encoder, self.run.device)
                    if request.conditions else None)
        generated: list[GeneratedSample] = []
        for start in range(0, len(indexed), request.batch_size):
            chunk = indexed[start:start + request.batch_size]
            outputs = self._generate_rows(request, embedded, [row for _, row in chunk],
                                          [request.row_seed(i) for i, _ in chunk])
            for position, (i, (condition, index)) in enumerate(chunk):
                generated.append(GeneratedSample(condition, index, request.row_seed(i),
                                                 {m: values[position] for m, values in outputs.items()}))
        return generated

    def _generate_rows(self, request: GenerationRequest, embedded: torch.Tensor | None, rows,
                       seeds: list[int]) -> dict[str, list]:
        """One batch of rows; ``embedded`` holds every condition's prompt embedding (None: unconditional)."""
        run, device = self.run, self.run.device
        diffusion = run.config.diffusion
        scales = self.guidance_scales(request)
        steps = request.steps or diffusion.sampling_steps
        if embedded is not None:
            embeddings = embedded[torch.tensor([c for c, _ in rows])]
            keep_when_conditioned = True
        else:  # the null context, the one condition dropout taught every denoiser
            embeddings = torch.zeros(len(rows), run.config.embed_dim, device=device)
            keep_when_conditioned = False  # and scale 1 (guidance_scales)
        shapes = {m: (len(rows), *run.registry[m].spec.latent_shape) for m in request.outputs}
        size = len(rows)

        def context(conditioned: bool) -> torch.Tensor:
            keep = torch.full((size,), conditioned and keep_when_conditioned, device=device)
            return condition_context(embeddings, keep)

        if request.joint:
            sides = {m: run.cross_guided(m) for m in request.outputs}

            def denoise_jointly(latents, timestep):
                timesteps = torch.as_tensor(timestep, device=device).expand(size)
                tokens = {m: sides[m].guidance(latents[m], timesteps) for m in request.outputs}
                noise = {}
                for m in request.outputs:  # each output attends to every *other* output's latent
                    others = torch.cat([tokens[o] for o in request.outputs if o != m], dim=1)
                    # like the tokens, in both branches of the guidance: joint outputs have no dropped source
                    extra = self._spatial_residuals(m, {o: (latents[o], timesteps) for o in request.outputs if o != m},
                                                    latents[m], timesteps)
                    one = guided(lambda z, t, conditioned, m=m, others=others, extra=extra:
                                 sides[m].denoiser(z, timesteps, context(conditioned), others, **extra),
                                 scales[m])
                    noise[m] = one(latents[m], timestep)
                return noise

            generators = [torch.Generator().manual_seed(seed) for seed in seeds]
            latents = sample_jointly(denoise_jointly, shapes, {m: sampling_scheduler(diffusion) for m in shapes},
                                     steps, generators, device, diffusion.eta)
        else:
            latents = {}
            known = self._condition_latents(request, rows, seeds)
            for m in request.outputs:
                if known is not None and m != known[0] and m in run.jointly_generatable():
                    one = self._cross_conditioned(m, known, context, scales[m], size)
                else:
                    denoiser = run.denoiser(m)
                    one = guided(lambda z, t, conditioned, denoiser=denoiser:
                                 denoiser(z, torch.as_tensor(t, device=device).expand(size), context(conditioned)),
                                 scales[m])
                generators = [torch.Generator().manual_seed(modality_seed(seed, m)) for seed in seeds]
                latents[m] = sample_jointly(lambda z, t, one=one, m=m: {m: one(z[m], t)}, {m: shapes[m]},
                                            {m: sampling_scheduler(diffusion)}, steps, generators, device,
                                            diffusion.eta)[m]
        return {m: self._decode(m, z) for m, z in latents.items()}

    def describe(self, request: GenerationRequest) -> dict:
        return {"latent_cross_guidance_from": self.cross_conditioning(request),
                "guidance_scale_per_output": self.guidance_scales(request)}

    def guidance_scales(self, request: GenerationRequest) -> dict[str, float]:
        """Each output's classifier-free guidance scale: the request's when it names one; else the scale
        ``medm2g tune-guidance`` chose on validation subjects for this (condition modality, output) task,
        when every condition has one modality and the outputs are sampled each on its own; else the
        run config's. Unconditional sampling uses 1 (the null context alone)."""
        default = self.run.config.diffusion.guidance_scale
        if not request.conditions:  # unconditional: nothing to guide toward, the null context alone
            return {m: 1.0 for m in request.outputs}
        if request.guidance_scale is not None:
            return {m: request.guidance_scale for m in request.outputs}
        sources = {condition.modality for condition in request.conditions}
        if request.joint or len(sources) != 1:
            return {m: default for m in request.outputs}
        source = sources.pop()
        return {m: self.run.tuned_guidance.get((source, m), default) for m in request.outputs}

    def cross_conditioning(self, request: GenerationRequest) -> str | None:
        """The modality whose known latent the outputs attend to, or None (prompt embedding only):
        it needs cross-guided parts, as do the outputs that use it, and every condition of its modality."""
        if request.joint or not request.cross_guided or not request.conditions:
            return None
        sources = {condition.modality for condition in request.conditions}
        source = sources.pop() if len(sources) == 1 else None
        return source if source in self.run.jointly_generatable() else None

    @torch.no_grad()
    def _condition_latents(self, request: GenerationRequest, rows, seeds: list[int]):
        """(modality, z_0, noise) of each row's condition, or None where cross-conditioning does not apply.
        Each row's latent and forward-process noise come from its own seed, so a row is reproducible alone."""
        source = self.cross_conditioning(request)
        if source is None:
            return None
        vae, shape = self.run.vae(source), self.run.registry[source].spec.latent_shape
        clean, noise = [], []
        for (condition, _), seed in zip(rows, seeds):
            sample = request.conditions[condition].sample
            generator = torch.Generator().manual_seed(modality_seed(seed, source) + 1)
            batch = [sample] if isinstance(sample, str) else sample[None].to(self.run.device)
            clean.append(vae.encode(batch, generator=generator).float().cpu())
            noise.append(torch.randn(shape, generator=generator))
        return source, torch.cat(clean).to(self.run.device), torch.stack(noise).to(self.run.device)

    def _spatial_residuals(self, target: str, sources: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                           latents: torch.Tensor, timesteps: torch.Tensor) -> dict:
        """``{"skip_residuals": ...}``: the sum of the spatial paths from each source (latent, its
        steps) into ``target`` at its ``latents`` and ``timesteps`` that the run trained, or ``{}``
        where it trained none."""
        total = None
        for source, (source_latents, source_steps) in sources.items():
            path = self.run.spatial_guidance(source, target)
            if path is not None:
                residuals = path(source_latents, source_steps, latents, timesteps)
                total = residuals if total is None else total + residuals
        return {} if total is None else {"skip_residuals": total}

    def _cross_conditioned(self, target: str, known, context, scale: float, size: int):
        """``target``'s guided denoiser, attending to V_source of the condition's latent (and, between
        two imaging modalities, adding it to the skip connections through the round's spatial
        guidance): clean (t = 0) where the rounds drew the source's step on its own, else noised to
        the output's step t, as the paper's rounds trained it. The unconditioned branch of
        classifier-free guidance gets neither, as the rounds' dropped conditions did not."""
        source, clean, noise = known
        side, other = self.run.cross_guided(target), self.run.cross_guided(source)
        scheduler = sampling_scheduler(self.run.config.diffusion)
        device = self.run.device
        fixed = None
        clean_steps = torch.zeros(size, dtype=torch.long, device=device)
        if self.run.config.cross_guidance.timesteps == "independent":  # the same tokens at every step
            fixed = other.guidance(clean, clean_steps)

        def denoise(z, t, conditioned):
            timesteps = torch.as_tensor(t, device=device).expand(size)
            if fixed is not None:  # trained with zeroed tokens as the null guidance: guidance weighs V_source too
                tokens = fixed if conditioned else torch.zeros_like(fixed)
                known = (clean, clean_steps)
            else:
                known = (scheduler.add_noise(clean, noise, timesteps), timesteps)
                tokens = other.guidance(known[0], timesteps)
            extra = self._spatial_residuals(target, {source: known}, z, timesteps) if conditioned else {}
            return side.denoiser(z, timesteps, context(conditioned), tokens, **extra)

        return guided(denoise, scale)

    @torch.no_grad()
    def _decode(self, modality: str, latents: torch.Tensor) -> list:
        decoded = self.run.vae(modality).decode(latents)
        if self.run.registry[modality].spec.kind is ModalityKind.TEXT:
            return list(decoded)
        return list(decoded.float().clamp(-1, 1).cpu())


def generation_backend(name: str, run: TrainedRun) -> GenerationBackend:
    """The named backend's generator for ``run``, from the installed backends' records."""
    backend = run.registry.backends.get(name)
    if backend is None or backend.generator is None:
        known = ", ".join(n for n, b in run.registry.backends.items() if b.generator is not None)
        raise ConfigError(f"unknown generation backend {name!r} (known: {known or 'none'})")
    return backend.generator(run)


def default_backend(run: TrainedRun, request: GenerationRequest) -> str:
    """medm2g where the run can generate every output with it, else a translation backend the run
    trained for the request's source and output (a SynDiff-only run needs no --backend), else medm2g
    (whose check then says what is missing)."""
    if all(m in run.generatable() for m in request.outputs):
        return "medm2g"
    sources = {condition.modality for condition in request.conditions}
    if len(sources) == 1 and len(request.outputs) == 1:
        return run.translation_backend(sources.pop(), request.outputs[0]) or "medm2g"
    return "medm2g"
