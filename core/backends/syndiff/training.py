"""Training SynDiff on unpaired batches: alternating critic and generator steps, lazy R1, EMA.

One Adam holds two parameter groups (generators at the generator rate, critics at the
critic rate); each half-step clears the other half's gradients before stepping, so Adam
leaves those parameters and their moments alone. That keeps the resumable state one
optimizer, saved by the same safetensors training state every medm2g stage uses.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from medm2g.core.backends.syndiff.model import SynDiff
from medm2g.core.backends.syndiff.unpaired import UnpairedBatches
from medm2g.core.errors import DivergenceError
from medm2g.core.progress import progress
from medm2g.core.training.experiment_log import ExperimentLog
from medm2g.core.training.history import append_history, read_history, truncate_history
from medm2g.core.training.state import load_training_state, save_training_state

logger = logging.getLogger("medm2g.train")


def _clear(parameters) -> None:
    for parameter in parameters:
        parameter.grad = None


def _nonfinite(loss: torch.Tensor, parameters) -> str | None:
    """What is not finite in a half-step (its loss, or a gradient of ``parameters``), or None."""
    if not bool(torch.isfinite(loss)):
        return f"loss is {float(loss)}"
    gradients = [p.grad for p in parameters if p.grad is not None]
    if gradients and not bool(torch.stack([torch.isfinite(g).all() for g in gradients]).all()):
        return f"gradients are not finite (loss {float(loss):.4g})"
    return None


def train_syndiff(model: SynDiff, batches: UnpairedBatches, state_path: Path, history_path: Path,
                  device: torch.device, seed: int, checkpoint_every: int = 100,
                  description: str = "", skip_nonfinite: int = 0,
                  experiment: ExperimentLog | None = None) -> tuple[list[dict], float]:
    """Run (or resume) ``model.config.training_steps`` steps, with a progress bar labelled
    ``description``; returns the loss log and this session's seconds.

    A step whose critic or generator loss or gradients are not finite is not applied; after
    ``skip_nonfinite`` such steps the next one raises :class:`DivergenceError` naming the half-step
    and the step, with the last checkpoint kept to resume from (as medm2g's own stages do)."""
    config = model.config
    optimizer = torch.optim.Adam([{"params": model.generators(), "lr": config.generator_learning_rate},
                                  {"params": model.critics(), "lr": config.discriminator_learning_rate}],
                                 betas=config.adam_betas)
    start = 0
    if state_path.is_file():
        start, _ = load_training_state(state_path, {"syndiff": model}, optimizer)
        truncate_history(history_path, start)
        logger.info("syndiff %s-%s: resuming at step %d of %d", model.a, model.b, start, config.training_steps)
    elif history_path.exists():
        history_path.unlink()
    model.to(device).train()
    started, pending, skipped, checkpoint = time.perf_counter(), [], 0, start
    label = description or f"syndiff {model.a}-{model.b}"
    bar = progress(range(start, config.training_steps), desc=label,
                   unit="step", total=config.training_steps - start)
    for step in bar:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batches(step, config.batch_size).items()}

        outputs = model.generator_pass(batch, generator)
        critic_loss = model.critic_loss(outputs)
        regularise = config.r1_gamma > 0 and step % config.lazy_regularisation == 0
        penalty = model.r1(batch, generator) if regularise else torch.zeros((), device=device)
        optimizer.zero_grad(set_to_none=True)
        (critic_loss + penalty).backward()
        _clear(model.generators())
        problem = _nonfinite((critic_loss + penalty).detach(), model.critics())
        half = "critic"
        if problem is None:
            optimizer.step()
            generator_loss, logs = model.generator_loss(outputs)  # against the critics just updated
            optimizer.zero_grad(set_to_none=True)
            generator_loss.backward()
            _clear(model.critics())
            problem, half = _nonfinite(generator_loss.detach(), model.generators()), "generator"
            if problem is None:
                optimizer.step()
                model.update_ema(step)
        if problem is not None:
            optimizer.zero_grad(set_to_none=True)
            skipped += 1
            if skipped > skip_nonfinite:
                if pending:
                    append_history(history_path, pending)  # the climb before it, for the curves
                    if experiment is not None:
                        experiment.rows(pending)
                if experiment is not None:
                    experiment.close()
                kept = (f"its last checkpoint (step {checkpoint}) is kept in {state_path}" if checkpoint
                        else "it had no checkpoint yet and will start again from its first step")
                raise DivergenceError(
                    f"{label} diverged: the {half} {problem} at step {step + 1} of {config.training_steps}; {kept}; "
                    f"lower syndiff.generator_learning_rate or syndiff.discriminator_learning_rate and run the "
                    f"same command to resume")
            logger.warning("%s: step %d skipped: the %s %s (%d of %d skips allowed)", label, step + 1, half, problem,
                           skipped, skip_nonfinite)
        else:
            pending.append({"step": step, "loss": float(generator_loss.detach()), "critic": float(critic_loss.detach()),
                            **({"r1": float(penalty.detach())} if regularise else {}), **logs,
                            "seconds": time.perf_counter() - started})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(generator=f"{pending[-1]['loss']:.3f}", critic=f"{pending[-1]['critic']:.3f}")
        done = step + 1
        if done % checkpoint_every == 0 or done == config.training_steps:
            append_history(history_path, pending)
            if experiment is not None:  # the run's experiment log (RUN/logs), where there is one
                experiment.rows(pending)
            pending = []
            if done < config.training_steps:
                save_training_state(state_path, {"syndiff": model}, optimizer, done)
            checkpoint = done
            logger.info("%s: step %d/%d critic %.4f", label, done, config.training_steps, float(critic_loss.detach()))
    model.eval()
    return read_history(history_path), time.perf_counter() - started
