"""Multi-flow rounds (sections 3.4 and 3.5): latent cross-guided training of one pair A-B.

Both latents are noised at the same step t (the paper; ``cross_guidance.timesteps: shared``), or
B's at a step of its own, clean half of the time (``independent``, the default: see
:class:`~medm2g.core.diffusion.cross_guidance.CrossGuidanceConfig`). A's denoiser predicts A's noise from
z_t^A, conditioned on B's prompt embedding C_B(x_B) (the aligned space) and attending,
through its guidance sub-layer theta_c, to V_B([z_t^B, f_B]); B's the other way round:

    L = L_cross^A + L_cross^B,   L_cross^A = || eps_A - eps_theta_A(z_t^A, t, C_B(x_B), V_B([z_t^B, f_B])) ||^2   (eq. 6)

Each side always attends to the *other* side's latent, never its own. Which of
(V_M, f_M, theta_c of M) train is the round's plan; a side frozen in this round
still computes its loss term only if it has trainable groups, so nothing frozen
costs a backward pass.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping

import attrs
import torch
from torch import nn

from medm2g.core.config.run_config import RunConfig
from medm2g.core.diffusion.attention import configure_attention
from medm2g.core.diffusion.conditional import condition_context
from medm2g.core.diffusion.cross_guidance import (
    Adaptation,
    ContextEncoder,
    GuidanceAttention,
    attach_cross_guidance,
    denoiser_parameter_groups,
)
from medm2g.core.diffusion.schedule import training_scheduler, training_target
from medm2g.core.diffusion.spatial_guidance import PairSpatialGuidance, SkipResiduals
from medm2g.core.errors import CheckpointError
from medm2g.core.graph.engine import ParamGroup, Part, Stage, spatial_guidance_owner
from medm2g.core.io.checkpoints import load_tensors, save_tensors
from medm2g.core.training.autoencoding import load_vae
from medm2g.core.training.batches import make_batch, to_device
from medm2g.core.training.data import paired_records
from medm2g.core.training.encoders import load_prompt_encoders, seeded_init
from medm2g.core.training.groups import trained_parameters
from medm2g.core.training.latent_diffusion import frozen_encodings, load_denoiser
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.loop import complete_stage, run_steps, stage_record
from medm2g.core.training.run import Run
from medm2g.core.training.shards import Batching, Shard
from medm2g.registry import ModalityRegistry

logger = logging.getLogger("medm2g.train")


class CrossGuidedSide(nn.Module):
    """Everything of modality M that cross-guidance adds: V_M, f_M and the sub-layers theta_c in M's denoiser.

    ``denoiser`` is M's trained (frozen) denoiser with the sub-layers attached.
    """

    def __init__(self, modality: str, denoiser: nn.Module, latent_shape, config: RunConfig):
        super().__init__()
        self.modality = modality
        settings = config.cross_guidance
        self.denoiser = denoiser
        with seeded_init(config.seed + 3, modality):  # theta_c's initial weights too: not the process's history
            self.guidance_layers = attach_cross_guidance(denoiser, guidance_dim=config.embed_dim)
            self.context_encoder = ContextEncoder(tuple(latent_shape), config.embed_dim, settings)
            self.adaptation = Adaptation(settings.adaptation_tokens, config.embed_dim, settings.width)

    def groups(self) -> dict[Part, list[nn.Parameter]]:
        return {
            Part.CONTEXT_ENCODER: list(self.context_encoder.parameters()),
            Part.ADAPTATION: list(self.adaptation.parameters()),
            Part.CROSS_GUIDANCE: [p for layer in self.guidance_layers for p in layer.parameters()],
        }

    def trainable_parts(self) -> nn.ModuleDict:
        """The modules a round may train (without the frozen denoiser around theta_c): what a
        resumable state needs to hold."""
        return nn.ModuleDict({"context_encoder": self.context_encoder, "adaptation": self.adaptation,
                              "cross_guidance": nn.ModuleList(self.guidance_layers)})

    def guidance(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """V_M([z_t^M, f_M]): what the *other* modality's denoiser attends to."""
        return self.context_encoder(noisy_latents, timesteps, self.adaptation(noisy_latents.shape[0]))

    def trained_state(self) -> dict[str, torch.Tensor]:
        state = {f"context_encoder.{k}": v for k, v in self.context_encoder.state_dict().items()}
        state.update({f"adaptation.{k}": v for k, v in self.adaptation.state_dict().items()})
        for name, module in self.denoiser.named_modules():
            if isinstance(module, GuidanceAttention):
                state.update({f"cross_guidance.{name}.{k}": v for k, v in module.state_dict().items()})
        return state

    def load_trained_state(self, state: Mapping[str, torch.Tensor], path) -> None:
        def part(prefix: str) -> dict:
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

        try:
            self.context_encoder.load_state_dict(part("context_encoder."))
            self.adaptation.load_state_dict(part("adaptation."))
            for name, module in self.denoiser.named_modules():
                if isinstance(module, GuidanceAttention):
                    module.load_state_dict(part(f"cross_guidance.{name}."))
        except RuntimeError as error:
            raise CheckpointError(f"{path}: cross-guided parts do not fit this model: {str(error).splitlines()[0]}") from None


def build_side(registry: ModalityRegistry, modality: str, config: RunConfig, layout: RunLayout,
               load_trained: bool) -> CrossGuidedSide:
    """M's frozen denoiser with its cross-guided parts, fresh or (``load_trained``) from an earlier round."""
    side = CrossGuidedSide(modality, load_denoiser(registry, modality, config, layout),
                           registry[modality].spec.latent_shape, config)
    if load_trained:
        path = layout.cross_guided(modality)
        if not path.is_file():
            raise CheckpointError(f"{path}: no cross-guided parts for {modality!r}; the round that trains them has not run")
        side.load_trained_state(load_tensors(path), path)
    return side


def side_loss(target: str, other: str, sides, targets, noisy, timesteps, embeddings, keep,
              source: tuple[torch.Tensor, torch.Tensor] | None = None, spatial=None) -> torch.Tensor:
    """L_cross^target (eq. 6): target's noise (or velocity, per the run's prediction type) from its
    noisy latent, conditioned on the other's prompt embedding and attending to V_other of the
    *other's* latent: noised to the same step (the paper), or ``source`` = (latent, its own steps),
    whose guidance tokens are then zeroed where the condition is dropped (the null guidance).
    ``spatial`` (a :class:`SpatialGuidance` from other into target) adds that same latent to the
    target's skip connections, zeroed where the condition is dropped."""
    source_latent, source_steps = source if source is not None else (noisy[other], timesteps)
    guidance = sides[other].guidance(source_latent, source_steps)
    if source is not None:  # dropped with the condition, so classifier-free guidance weighs V_other too
        guidance = guidance * keep.to(guidance.dtype).view(-1, 1, 1)
    extra = {}
    if spatial is not None:
        residuals: SkipResiduals = spatial(source_latent, source_steps, noisy[target], timesteps)
        extra["skip_residuals"] = residuals.scaled(keep)
    predicted = sides[target].denoiser(noisy[target], timesteps, condition_context(embeddings[other], keep), guidance,
                                       **extra)
    return torch.nn.functional.mse_loss(predicted.float(), targets[target].float())


def build_spatial_guidance(pair: tuple[str, str], denoisers: Mapping[str, nn.Module], registry: ModalityRegistry,
                           config: RunConfig) -> PairSpatialGuidance:
    """The pair's spatial guidance (both directions where the denoisers take it), initialised from
    (seed, pair); without paths when ``cross_guidance.spatial`` is off."""
    owner = spatial_guidance_owner(pair)
    settings = config.cross_guidance
    with seeded_init(config.seed + 5, owner):
        return PairSpatialGuidance(pair, dict(denoisers), {m: registry[m].spec.latent_shape for m in pair},
                                   settings.spatial_width if settings.spatial else None)


def load_spatial_guidance(pair: tuple[str, str], denoisers: Mapping[str, nn.Module], registry: ModalityRegistry,
                          config: RunConfig, layout: RunLayout) -> PairSpatialGuidance:
    """The spatial guidance a completed round saved for ``pair``."""
    path = layout.spatial_guidance(spatial_guidance_owner(pair))
    spatial = build_spatial_guidance(pair, denoisers, registry, config)
    try:
        spatial.load_state_dict(load_tensors(path))
    except RuntimeError as error:
        raise CheckpointError(f"{path}: spatial guidance does not fit this model: {str(error).splitlines()[0]}") from None
    return spatial


def independent_source(scheduler, latents: torch.Tensor, shard: Shard, clean_source: float,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The guiding side's latent at a step of its own (``cross_guidance.timesteps: independent``):
    exactly clean (t = 0) with probability ``clean_source``, else noised to a uniform step."""
    steps = shard.random.randint(scheduler.config.num_train_timesteps).to(device)
    clean = (shard.random.rand() < clean_source).to(device)
    noise = shard.random.randn(*latents.shape[1:]).to(device)
    steps = torch.where(clean, torch.zeros_like(steps), steps)
    noisy = scheduler.add_noise(latents, noise, steps)
    mask = clean.view(-1, *([1] * (latents.dim() - 1)))
    return torch.where(mask, latents, noisy), steps


@attrs.define(eq=False)
class Round:
    """One multi-flow round ready to step: its sides, the frozen models around them, the optimizer
    over exactly the groups the plan trains, its batches and the loss of one micro-batch."""

    stage: Stage
    sides: dict[str, CrossGuidedSide]
    trained_sides: list[str]
    optimizer: torch.optim.Optimizer
    records: int
    step_loss: Callable[[Shard], tuple[torch.Tensor, dict]]
    vaes: dict[str, nn.Module]
    encoders: dict[str, nn.Module]
    data: object  # the round's paired records
    batching: Batching
    spatial: PairSpatialGuidance | None = None  # trained by this round when its plan says so

    def stateful(self) -> dict[str, nn.Module]:
        """What a resumable state holds: the trainable parts of the trained sides (and the spatial guidance)."""
        state = {m: self.sides[m].trainable_parts() for m in self.trained_sides}
        if self.spatial is not None:
            state[SPATIAL_STATE] = self.spatial
        return state


SPATIAL_STATE = "spatial_guidance"


def build_round(run: Run, stage: Stage) -> Round:
    """Frozen means free: everything the round does not train is loaded frozen (no grad, so no
    ``.grad`` after a step; stored in the mixed precision when the run has one) and stays out of
    the optimizer, whose state is sized to the trained groups alone; a side with nothing to train
    costs no backward pass."""
    plan, registry, config, layout, engine = run.plan, run.registry, run.config, run.layout, run.engine
    pair, device = stage.modalities, engine.device
    trained_groups = {(g.modality, g.part) for g in stage.trains}
    trained_sides = [m for m in pair if any((m, part) in trained_groups for part in Part)]
    sides = {m: build_side(registry, m, config, layout, load_trained=m not in trained_sides).to(device) for m in pair}
    for side in sides.values():
        configure_attention(side.denoiser, config.attention, device)
    vaes = {m: load_vae(registry, m, config, layout).to(device).requires_grad_(False) for m in pair}
    encoders = {m: e.to(device).requires_grad_(False) for m, e in load_prompt_encoders(registry, pair, config, layout).items()}
    groups = {ParamGroup(m, part): parameters for m in pair for part, parameters in sides[m].groups().items()}
    for m in pair:  # the denoiser around theta_c: its backbone and condition attention (theta_c is above)
        for part, parameters in denoiser_parameter_groups(sides[m].denoiser).items():
            if Part(part) is not Part.CROSS_GUIDANCE:
                groups[ParamGroup(m, Part(part))] = parameters
    spatial_group = ParamGroup(spatial_guidance_owner(pair), Part.SPATIAL_GUIDANCE)
    spatial = None
    if spatial_group in stage.trains:
        spatial = build_spatial_guidance(pair, {m: sides[m].denoiser for m in pair}, registry, config).to(device)
        groups[spatial_group] = list(spatial.parameters())
    parameters = trained_parameters(stage, groups)
    engine.cast_frozen(*sides.values(), *vaes.values(), *encoders.values())
    engine.checkpoint_gradients(*(side.denoiser for side in sides.values()))
    data = paired_records(plan.graph, stage.datasets, pair, registry, split="train")
    batching = engine.batching(len(data), config.cross_guidance.batch_size, config.seed + stage.index,
                               "cross_guidance.batch_size")
    with torch.no_grad(), engine.autocast():  # f_M starts at C_M(x_M) of sampled training records (Textual Inversion)
        sample = make_batch(data, batching.indices(0))
        for modality in trained_sides:
            embeddings = encoders[modality](to_device(sample[modality], device)).float()
            sides[modality].adaptation.initialise_from(embeddings, torch.Generator().manual_seed(config.seed))
    spatial_ids = {id(p) for p in groups.get(spatial_group, ())}
    parameter_groups = [{"params": [p for p in parameters if id(p) not in spatial_ids]},
                        {"params": [p for p in parameters if id(p) in spatial_ids],
                         "lr": config.cross_guidance.spatial_learning_rate}]
    parameter_groups = [group for group in parameter_groups if group["params"]]
    optimizer = config.cross_guidance.optimiser(parameter_groups, decoupled_weight_decay=False)  # the paper's Adam
    scheduler = training_scheduler(config.diffusion)

    encodings = {m: frozen_encodings(config, layout, m, vaes[m], encoders[m], data, engine) for m in pair}
    settings = config.cross_guidance

    def step_loss(shard: Shard):
        latents, embeddings = {}, {}
        for m in pair:  # in pair order: each sample draws its posteriors, then its timestep and noises
            latents[m], embeddings[m] = encodings[m](shard, device)
        timesteps = shard.random.randint(scheduler.config.num_train_timesteps).to(device)
        noise = {m: shard.random.randn(*latents[m].shape[1:]).to(device) for m in pair}
        noisy = {m: scheduler.add_noise(latents[m], noise[m], timesteps) for m in pair}
        targets = {m: training_target(scheduler, latents[m], noise[m], timesteps) for m in pair}
        keep = (shard.random.rand() >= config.diffusion.condition_dropout).to(device)
        a, b = pair
        terms = {}
        for target, other in ((a, b), (b, a)):
            path = spatial.path(other, target) if spatial is not None else None
            # a side's term trains its theta_c, the other's V, f and the spatial path into it: compute it
            # when any of those train
            if target in trained_sides or other in trained_sides or path is not None:
                source = (independent_source(scheduler, latents[other], shard, settings.clean_source, device)
                          if settings.timesteps == "independent" else None)
                terms[target] = side_loss(target, other, sides, targets, noisy, timesteps, embeddings, keep, source,
                                          path)
        loss = sum(terms.values())
        return loss, {f"cross_{m}": float(t.detach()) for m, t in terms.items()}

    return Round(stage, sides, trained_sides, optimizer, len(data), step_loss, vaes, encoders, data, batching, spatial)


def run_round_stage(run: Run, stage: Stage) -> dict:
    """Train (or resume) one multi-flow round; saves the cross-guided parts of the sides it trains."""
    config, layout, engine = run.config, run.layout, run.engine
    round_ = build_round(run, stage)
    history, seconds = run_steps(stage, layout, round_.stateful(), round_.optimizer, round_.step_loss,
                                 config.cross_guidance.steps, config.cross_guidance.checkpoint_every, config.seed,
                                 round_.batching, engine, config.cross_guidance.warmup_steps, max_grad_norm=1.0)
    if engine.is_main:
        for modality in round_.trained_sides:
            save_tensors(layout.cross_guided(modality), round_.sides[modality].trained_state(),
                         {"modality": modality, "stage": stage.title, "size": config.size.value})
    weights = {m: str(layout.cross_guided(m)) for m in round_.trained_sides}
    if round_.spatial is not None and len(round_.spatial.paths):
        owner = spatial_guidance_owner(stage.modalities)
        if engine.is_main:
            save_tensors(layout.spatial_guidance(owner), round_.spatial.state_dict(),
                         {"pair": owner, "stage": stage.title, "size": config.size.value})
        weights[owner] = str(layout.spatial_guidance(owner))
    return complete_stage(layout, stage, stage_record(
        stage, round_.records, config.cross_guidance.steps, seconds, history, config, weights=weights), engine)
