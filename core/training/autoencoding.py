"""VAE stages: train one modality's VAE on every record of it the graph's data holds.

Each VAE brings its own loss (``training_loss``: L1 + KL for images, token
cross-entropy + KL for text), so this stage knows no modality. After training,
the latent scale is calibrated from data, not hard-coded: the VAE is told
1 / std of its latents over up to ``scale_samples`` training samples, so the
diffuser of the next stage sees unit-variance latents (Stable Diffusion's 0.18215
is exactly this number for its own VAE and data).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from medm2g.core.config.run_config import RunConfig
from medm2g.core.errors import CheckpointError
from medm2g.core.graph.engine import ParamGroup, Part, Stage
from medm2g.core.io.checkpoints import load_module, read_metadata, save_module
from medm2g.core.training.batches import make_batch, to_device
from medm2g.core.training.data import paired_records
from medm2g.core.training.encoders import seeded_init
from medm2g.core.training.experiment_log import image_grid
from medm2g.core.training.groups import trained_parameters
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.loop import complete_stage, run_steps, stage_record
from medm2g.core.training.run import Run
from medm2g.core.training.shards import Shard
from medm2g.registry import ModalityKind, ModalityRegistry

logger = logging.getLogger("medm2g.train")


def build_vae(registry: ModalityRegistry, modality: str, config: RunConfig) -> nn.Module:
    with seeded_init(config.seed + 1, modality):
        return registry[modality].vae(config.size, config.model_options(modality, "vae"))


@torch.no_grad()
def calibrate_scale(vae: nn.Module, data, batch_size: int, samples: int, modality: str, device) -> float:
    """1 / std of the unscaled latents of up to ``samples`` records."""
    vae.eval()
    vae.set_scaling_factor(1.0)
    latents = []
    count = min(samples, len(data))
    for start in range(0, count, batch_size):
        batch = make_batch(data, range(start, min(start + batch_size, count)))
        latents.append(vae.encode(to_device(batch[modality], device), generator=torch.Generator().manual_seed(start)))
    std = float(torch.cat(latents).float().std())
    return 1.0 / max(std, 1e-6)


def run_vae_stage(run: Run, stage: Stage) -> dict:
    """Train (or resume) the VAE of ``stage.modalities[0]``; returns its record. The VAE's own loss
    draws its posterior samples batch-wise, from one generator per micro-batch."""
    plan, registry, config, layout, engine = run.plan, run.registry, run.config, run.layout, run.engine
    (modality,) = stage.modalities
    settings, device = config.vae, engine.device
    vae = build_vae(registry, modality, config).to(device).train()
    engine.checkpoint_gradients(vae)
    data = paired_records(plan.graph, stage.datasets, (modality,), registry, split="train")
    batching = engine.batching(len(data), settings.batch_size, config.seed + stage.index, "vae.batch_size")
    is_text = registry[modality].spec.kind is ModalityKind.TEXT
    kl_weight = settings.text_kl_weight if is_text else settings.image_kl_weight
    steps = settings.text_steps if is_text else settings.steps
    parameters = trained_parameters(stage, {ParamGroup(modality, Part.VAE): vae.parameters()})
    optimizer = settings.optimiser(parameters)

    def step_loss(shard: Shard):
        batch = make_batch(data, shard.indices)
        return vae.training_loss(to_device(batch[modality], device), generator=shard.generator, kl_weight=kl_weight)

    @torch.no_grad()
    def reconstructions() -> dict:
        """The experiment log's picture: up to eight training images (top) and the VAE's reconstructions."""
        if is_text:
            return {}
        vae.eval()
        batch = to_device(make_batch(data, range(min(8, len(data))))[modality], device)
        decoded = vae.decode(vae.encode(batch, generator=torch.Generator().manual_seed(0)))
        vae.train()
        shown = registry[modality].spec.intensity.display_range()
        return {"reconstructions (top: data, bottom: VAE)": image_grid([list(batch), list(decoded.float())], shown)}

    history, seconds = run_steps(stage, layout, {"vae": vae}, optimizer, step_loss, steps, settings.checkpoint_every,
                                 config.seed, batching, engine, settings.warmup_steps, max_grad_norm=1.0,
                                 pictures=reconstructions)
    if getattr(vae, "keeps_pretrained_scale", False):  # Stable Diffusion's 0.18215 came with its weights
        scale = vae.scaling_factor
    else:
        scale = calibrate_scale(vae, data, batching.batch_size, settings.scale_samples, modality, device)
        vae.set_scaling_factor(scale)
    if engine.is_main:
        save_module(layout.vae(modality), vae, {"modality": modality, "size": config.size.value,
                                                "scaling_factor": f"{scale:.8g}", "stage": stage.title})
        if hasattr(vae, "export_pretrained"):
            vae.export_pretrained(layout.exported(modality, "vae"))
    logger.info("%s: done, latent scale %.4f", stage.title, scale)
    return complete_stage(layout, stage, stage_record(stage, len(data), steps, seconds, history, config,
                                                      scaling_factor=scale, weights=str(layout.vae(modality))), engine)


def load_vae(registry: ModalityRegistry, modality: str, config: RunConfig, layout: RunLayout) -> nn.Module:
    """A trained VAE of this run, frozen (eval mode, no gradients)."""
    path = layout.vae(modality)
    if not path.is_file():
        raise CheckpointError(f"{path}: no trained VAE for {modality!r} in this run; its VAE stage has not run")
    saved = read_metadata(path)
    if saved.get("size") not in (None, config.size.value):
        raise CheckpointError(f"{path}: saved at size {saved.get('size')}, the run asks {config.size.value}")
    vae = load_module(path, build_vae(registry, modality, config))
    if "scaling_factor" in saved:  # diffusers keeps it in the config, not in the weights
        vae.set_scaling_factor(float(saved["scaling_factor"]))
    return vae.eval().requires_grad_(False)
