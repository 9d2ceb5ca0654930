"""Single-modality LDM stages (section 3.4): each modality's denoiser learns to predict the
noise in its VAE latents, conditioned on its own aligned prompt embedding C_M(x).

Conditioning on the aligned space is what makes any-to-any generation possible later:
at sampling time another modality's embedding (a report's C_text) lands in the same
space and takes the place of C_M(x). With probability ``condition_dropout`` the
context is the null context (zeros), which classifier-free guidance needs.

The VAE and the prompt encoder are frozen here (their stages trained them); the
stage trains the denoiser's backbone and its condition attention, i.e. all of it.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from medm2g.core.config.run_config import RunConfig
from medm2g.core.diffusion.attention import configure_attention
from medm2g.core.diffusion.conditional import condition_context
from medm2g.core.diffusion.cross_guidance import denoiser_parameter_groups
from medm2g.core.diffusion.schedule import guided, sample, sampling_scheduler, training_scheduler, training_target
from medm2g.core.errors import CheckpointError
from medm2g.core.graph.engine import ParamGroup, Part, Stage
from medm2g.core.io.checkpoints import load_module, save_module
from medm2g.core.training.autoencoding import load_vae
from medm2g.core.training.batches import make_batch, to_device
from medm2g.core.training.data import paired_records
from medm2g.core.training.encoders import load_prompt_encoders, seeded_init
from medm2g.core.training.engine import Engine
from medm2g.core.training.experiment_log import image_grid
from medm2g.core.training.groups import trained_parameters
from medm2g.core.training.latent_cache import CachedRecords, LatentCache, cacheable, warm
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.loop import complete_stage, run_steps, stage_record
from medm2g.core.training.run import Run
from medm2g.core.training.shards import Shard
from medm2g.registry import ModalityKind, ModalityRegistry

logger = logging.getLogger("medm2g.train")


def build_denoiser(registry: ModalityRegistry, modality: str, config: RunConfig) -> nn.Module:
    with seeded_init(config.seed + 2, modality):
        return registry[modality].unet(config.size, config.embed_dim, config.model_options(modality, "unet"))


class FrozenEncodings:
    """(latents, prompt embeddings) of a stage's records under the frozen VAE and C_M: read from the
    latent cache by dataset index when the stage has one (no image is read or encoded), else
    encoded now. Each sample's latent is drawn from its posterior with the sample's own generator;
    a plugin VAE without a posterior draws batch-wise instead."""

    def __init__(self, modality: str, vae: nn.Module, encoder: nn.Module, data, cached: CachedRecords | None = None):
        self.modality, self.vae, self.encoder, self.data, self.cached = modality, vae, encoder, data, cached

    @torch.no_grad()
    def __call__(self, shard: Shard, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cached is not None:
            mean, logvar, embeddings = self.cached.read(shard.indices, device)
            return shard.random.latents(self.vae, mean, logvar), embeddings
        samples = to_device(make_batch(self.data, shard.indices)[self.modality], device)
        if cacheable(self.vae):
            mean, logvar = self.vae.posterior(samples)
            return shard.random.latents(self.vae, mean.float(), logvar.float()), self.encoder(samples).float()
        return self.vae.encode(samples, generator=shard.generator), self.encoder(samples).float()


class LatentDiffusionStep:
    """The LDM objective: MSE of the prediction (eps, or v per the run's ``prediction_type``) on
    z_t = sqrt(a_t) z_0 + sqrt(1 - a_t) eps."""

    def __init__(self, encodings: FrozenEncodings, denoiser: nn.Module, scheduler, condition_dropout: float):
        self.encodings, self.denoiser = encodings, denoiser
        self.scheduler, self.condition_dropout = scheduler, condition_dropout

    def __call__(self, shard: Shard, device: torch.device):
        latents, embeddings = self.encodings(shard, device)
        timesteps = shard.random.randint(self.scheduler.config.num_train_timesteps).to(device)
        noise = shard.random.randn(*latents.shape[1:]).to(device)
        keep = (shard.random.rand() >= self.condition_dropout).to(device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        predicted = self.denoiser(noisy, timesteps, condition_context(embeddings, keep))
        target = training_target(self.scheduler, latents, noise, timesteps)
        loss = torch.nn.functional.mse_loss(predicted.float(), target.float())
        return loss, {"conditioned_fraction": float(keep.float().mean())}


def frozen_encodings(config: RunConfig, layout: RunLayout, modality: str, vae: nn.Module, encoder: nn.Module,
                     data, engine: Engine) -> FrozenEncodings:
    """A stage's frozen encodings of ``modality``: with every record of ``data`` in the latent cache
    up front (encoded by the main process, which writes it; the others then read it), unless the
    run config turns caching off or the VAE cannot be cached."""
    if not config.latent_cache:
        return FrozenEncodings(modality, vae, encoder, data)
    if not cacheable(vae):
        logger.info("latent cache: %s's VAE has no posterior/sample_latents; encoding every step", modality)
        return FrozenEncodings(modality, vae, encoder, data)
    with engine.main_first(), engine.autocast():
        cached = warm(LatentCache(layout.latent_cache, modality, vae, encoder), data, modality, engine.device)
    return FrozenEncodings(modality, vae, encoder, data, cached)


def run_ldm_stage(run: Run, stage: Stage) -> dict:
    """Train (or resume) the denoiser of ``stage.modalities[0]``; returns its record."""
    plan, registry, config, layout, engine = run.plan, run.registry, run.config, run.layout, run.engine
    (modality,) = stage.modalities
    settings, device = config.ldm, engine.device
    vae = load_vae(registry, modality, config, layout).to(device)
    encoder = load_prompt_encoders(registry, [modality], config, layout)[modality].to(device).requires_grad_(False)
    engine.cast_frozen(vae, encoder)
    denoiser = build_denoiser(registry, modality, config).to(device).train()
    configure_attention(denoiser, config.attention, device)
    engine.checkpoint_gradients(denoiser)
    data = paired_records(plan.graph, stage.datasets, (modality,), registry, split="train")
    batching = engine.batching(len(data), settings.batch_size, config.seed + stage.index, "ldm.batch_size")
    is_text = registry[modality].spec.kind is ModalityKind.TEXT
    learning_rate = settings.text_learning_rate if is_text else settings.learning_rate
    steps = settings.text_steps if is_text else settings.steps
    groups = {ParamGroup(modality, Part(part)): parameters for part, parameters in denoiser_parameter_groups(denoiser).items()}
    parameters = trained_parameters(stage, {**groups, ParamGroup(modality, Part.VAE): vae.parameters()})
    optimizer = settings.optimiser(parameters, learning_rate)
    compute = LatentDiffusionStep(frozen_encodings(config, layout, modality, vae, encoder, data, engine), denoiser,
                                  training_scheduler(config.diffusion), config.diffusion.condition_dropout)

    def step_loss(shard: Shard):
        return compute(shard, device)

    @torch.no_grad()
    def samples() -> dict:
        """The experiment log's picture: up to four training images (top) and what the trained LDM
        samples from their prompt embeddings (guided as generation is, seeds 0-3)."""
        if is_text:
            return {}
        count = min(4, len(data))
        truth = to_device(make_batch(data, range(count))[modality], device)
        with engine.autocast():  # the frozen encoder and VAE are in the run's precision (bf16, say)
            embeddings = encoder(truth).float()
        denoiser.eval()

        def denoise(z, t, conditioned):
            keep = torch.full((count,), conditioned, device=device)
            return denoiser(z, torch.as_tensor(t, device=device).expand(count), condition_context(embeddings, keep))

        shape = (count, *registry[modality].spec.latent_shape)
        with engine.autocast():
            latents = sample(guided(denoise, config.diffusion.guidance_scale), shape,
                             sampling_scheduler(config.diffusion), config.diffusion.sampling_steps,
                             [torch.Generator().manual_seed(i) for i in range(count)], device, config.diffusion.eta)
            generated = vae.decode(latents).float().clamp(-1, 1)
        denoiser.train()
        shown = registry[modality].spec.intensity.display_range()
        return {"samples (top: data, bottom: sampled from its condition)": image_grid([list(truth), list(generated)],
                                                                                      shown)}

    history, seconds = run_steps(stage, layout, {"denoiser": denoiser}, optimizer, step_loss, steps,
                                 settings.checkpoint_every, config.seed, batching, engine, settings.warmup_steps,
                                 max_grad_norm=1.0, pictures=samples)
    denoiser.eval()
    if engine.is_main:
        save_module(layout.denoiser(modality), denoiser,
                    {"modality": modality, "size": config.size.value, "context_dim": str(config.embed_dim),
                     "stage": stage.title})
        if hasattr(denoiser, "export_pretrained"):
            denoiser.export_pretrained(layout.exported(modality, "unet"))
    return complete_stage(layout, stage, stage_record(stage, len(data), steps, seconds, history, config,
                                                      weights=str(layout.denoiser(modality))), engine)


def load_denoiser(registry: ModalityRegistry, modality: str, config: RunConfig, layout: RunLayout) -> nn.Module:
    path = layout.denoiser(modality)
    if not path.is_file():
        raise CheckpointError(f"{path}: no trained denoiser for {modality!r} in this run; its LDM stage has not run")
    return load_module(path, build_denoiser(registry, modality, config)).eval().requires_grad_(False)
