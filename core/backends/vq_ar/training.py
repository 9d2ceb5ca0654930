"""Training a ``vq-ar`` edge's three parts, one resumable phase each: codebook, alignment, transformer.

Each phase keeps its own training state, loss log and curves in the stage's folder
(``<phase>-state.safetensors``, ``<phase>-history.jsonl``, ``<phase>-curves.png``) and its
finished weights (``<phase>.safetensors``), so a stopped run resumes inside the phase it was in and
never retrains a finished one. Every step's batch is drawn from a generator seeded by (seed, phase,
step), and the codebook's dead-code restarts look at a batch drawn the same way, so a resumed phase
takes the steps an uninterrupted one would have taken.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from pathlib import Path
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F

from medm2g.core.backends.vq_ar.codebook import codebook_usage, hinge_critic_loss
from medm2g.core.backends.vq_ar.model import VQAutoregressive
from medm2g.core.errors import DivergenceError
from medm2g.core.io.checkpoints import load_module, save_module
from medm2g.core.progress import progress
from medm2g.core.training.experiment_log import ExperimentLog
from medm2g.core.training.history import append_history, draw_curves, read_history, truncate_history
from medm2g.core.training.state import load_training_state, save_training_state

logger = logging.getLogger("medm2g.train")

StepFunction = Callable[[int, torch.Generator], dict]
"""(step, the step's generator) -> its logged values: runs its own forward, backward and optimizer step."""


def phase_generator(seed: int, phase: str, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(phase.encode()) * 7919 + step) % 2**63)


def train_phase(phase: str, module: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int,
                step_function: StepFunction, folder: Path, seed: int, checkpoint_every: int, label: str,
                skip_nonfinite: int = 0, experiment: ExperimentLog | None = None) -> tuple[list[dict], float]:
    """Run (or resume, or skip when its weights exist) ``steps`` of one phase; returns its loss log
    and this session's seconds. A step whose loss is not finite is not counted; more than
    ``skip_nonfinite`` of them raise :class:`DivergenceError` with the last checkpoint kept."""
    weights, state = folder / f"{phase}.safetensors", folder / f"{phase}-state.safetensors"
    history_path, curves = folder / f"{phase}-history.jsonl", folder / f"{phase}-curves.png"
    if weights.is_file():
        load_module(weights, module)
        return read_history(history_path), 0.0
    start = 0
    if state.is_file():
        start, _ = load_training_state(state, {phase: module}, optimizer)
        truncate_history(history_path, start)
        logger.info("%s: resuming at step %d of %d", label, start, steps)
    elif history_path.exists():
        history_path.unlink()
    module.train()
    started, pending, skipped, checkpoint = time.perf_counter(), [], 0, start
    bar = progress(range(start, steps), desc=label, unit="step", total=steps - start)
    for step in bar:
        logs = step_function(step, phase_generator(seed, phase, step))
        if not all(torch.isfinite(torch.tensor(value)) for value in logs.values()):
            optimizer.zero_grad(set_to_none=True)
            skipped += 1
            if skipped > skip_nonfinite:
                kept = f"its last checkpoint (step {checkpoint}) is kept in {state}" if checkpoint else \
                    "it had no checkpoint yet and starts again from its first step"
                raise DivergenceError(f"{label} diverged at step {step + 1} of {steps} ({logs}); {kept}; lower "
                                      f"the vq_ar learning rates and run the same command to resume")
            logger.warning("%s: step %d skipped, not finite: %s", label, step + 1, logs)
        else:
            pending.append({"step": step, **logs, "seconds": time.perf_counter() - started})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{logs['loss']:.4f}")
        done = step + 1
        if done % checkpoint_every == 0 or done == steps:
            append_history(history_path, pending)
            if experiment is not None:
                experiment.rows([{f"{phase}/{k}" if k not in ("step", "seconds") else k: v for k, v in row.items()}
                                 for row in pending])
            pending = []
            if done < steps:
                save_training_state(state, {phase: module}, optimizer, done)
            checkpoint = done
    module.eval()
    save_module(weights, module, {"phase": phase})
    state.unlink(missing_ok=True)
    history = read_history(history_path)
    if history:
        draw_curves(history, curves, label, keys=[k for k in history[0] if k not in ("step", "seconds")])
    return history, time.perf_counter() - started


def _batch(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, count, (min(size, count),), generator=generator)


def codebook_step(model: VQAutoregressive, images: torch.Tensor, optimizer: torch.optim.Optimizer,
                  device: torch.device) -> StepFunction:
    """One VQ-GAN step: the critic's hinge half-step (after the warm-up), then the autoencoder's."""
    config, codebook = model.config, model.codebook
    autoencoder, critic = list(codebook.autoencoder.parameters()), list(codebook.critic.parameters())

    def step(index: int, generator: torch.Generator) -> dict:
        batch = images[_batch(len(images), config.batch_size, generator)].to(device)
        adversarial = index >= config.discriminator_start and config.adversarial_weight > 0
        decoded, vq_loss, indices = codebook.reconstruct(batch)
        logs = {}
        if adversarial:
            critic_loss = hinge_critic_loss(codebook.critic(batch), codebook.critic(decoded.detach()))
            optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            for parameter in autoencoder:
                parameter.grad = None
            optimizer.step()
            logs["critic"] = float(critic_loss.detach())
        l1 = (decoded - batch).abs().mean()
        loss = l1 + vq_loss
        if adversarial:
            loss = loss - config.adversarial_weight * codebook.critic(decoded).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for parameter in critic:
            parameter.grad = None
        optimizer.step()
        logs.update({"loss": float(loss.detach()), "l1": float(l1.detach()), "vq": float(vq_loss.detach()),
                     **codebook_usage(indices.cpu(), config.codebook_size)})
        if config.dead_code_restart_every and (index + 1) % config.dead_code_restart_every == 0 \
                and index + 1 < config.codebook_steps:
            probe = images[_batch(len(images), 4 * config.batch_size, generator)].to(device)
            with torch.no_grad():
                used = torch.bincount(codebook.encode(probe).flatten(), minlength=config.codebook_size) > 0
            logs["restarted"] = float(codebook.restart_codes(~used.to(codebook.codes.device), probe, generator))
        return logs

    return step


def alignment_step(model: VQAutoregressive, tokens: torch.Tensor, masks: torch.Tensor, codes: torch.Tensor,
                   mirrored: torch.Tensor, optimizer: torch.optim.Optimizer, device: torch.device) -> StepFunction:
    """One contrastive step of the word-patch alignment on a batch of (prompt, codebook grid) pairs;
    ``mirrored``: the grids of the images mirrored about their midlines. A ``typical_mirror_share``
    of the batch, drawn by the step's generator, is compared with the typical entries instead."""

    def step(index: int, generator: torch.Generator) -> dict:
        chosen = _batch(len(tokens), model.config.batch_size, generator)
        typical = torch.rand(len(chosen), generator=generator) < model.config.typical_mirror_share
        embedded = model.codebook.embed(codes[chosen].to(device)).detach()
        opposite = model.codebook.embed(mirrored[chosen].to(device)).detach()
        loss = model.alignment.loss(tokens[chosen].to(device), masks[chosen].to(device), embedded, opposite,
                                    typical.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach()), "temperature": float(model.alignment.temperature().detach())}

    return step


def transformer_step(model: VQAutoregressive, conditions: torch.Tensor, masks: torch.Tensor, images: torch.Tensor,
                     optimizer: torch.optim.Optimizer, device: torch.device,
                     autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> StepFunction:
    """One next-token step of the transformer on a batch of (conditioning, image tokens) sequences;
    its forward runs under ``autocast`` (the run's ``acceleration.mixed_precision``: bf16 made a step
    about a quarter faster on the project's CPU, ``benchmarks/README.md``). The codebook's GAN and the
    small alignment stay in fp32."""

    def step(index: int, generator: torch.Generator) -> dict:
        chosen = _batch(len(conditions), model.config.batch_size, generator)
        with autocast():
            loss = model.transformer.loss(conditions[chosen].to(device), masks[chosen].to(device),
                                          images[chosen].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.transformer.parameters(), 1.0)
        optimizer.step()
        return {"loss": float(loss.detach())}

    return step


@torch.no_grad()
def reconstruction_error(model: VQAutoregressive, images: torch.Tensor, device: torch.device) -> dict[str, float]:
    """Mean absolute error and PSNR (on [-1, 1]) of the codebook's reconstructions, with its usage on them."""
    errors, squared, indices = [], [], []
    for start in range(0, len(images), 32):
        batch = images[start:start + 32].to(device)
        codes = model.codebook.encode(batch)
        decoded = model.codebook.decode(codes)
        errors.append((decoded - batch).abs().flatten(1).mean(1).cpu())
        squared.append(F.mse_loss(decoded, batch, reduction="none").flatten(1).mean(1).cpu())
        indices.append(codes.cpu())
    mse = torch.cat(squared)
    psnr = 10 * torch.log10(4.0 / mse.clamp(min=1e-10))
    return {"l1": float(torch.cat(errors).mean()), "psnr": float(psnr.mean()),
            **codebook_usage(torch.cat(indices), model.config.codebook_size)}
