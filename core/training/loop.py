"""The optimisation loop every stage shares: steps, checkpoints, resume, progress, loss log.

A stage supplies what differs (its modules, optimizer, batches and the loss of one
micro-batch); this module does what must not differ between stages: the step runs on the
:class:`Engine` (processes, micro-batches, precision), every random number of step k is
seeded from (seed, stage, k), state is saved atomically every
``checkpoint_every`` steps, a stopped stage resumes from its last state with
the log truncated to match, and a progress bar shows the stage, step, loss and speed.

A step whose loss or gradients are not finite (a learning rate far too high, an fp16
overflow) is not applied: the optimizer does not step on it. By default the stage then stops
with a :class:`DivergenceError` naming it and the step; its last checkpoint (written before
the divergence, so finite) stays, no later stage runs, and the same command resumes from
that checkpoint once the config is fixed. Where the run config allows it
(:func:`nonfinite_skips`), a stage skips up to that many such steps before it stops, as
AMP's gradient scaler does. Under fp16's scaler, overflowing gradients are the scaler's to
skip (it lowers its scale); the loss is still watched.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Callable, Mapping

import attrs
import numpy as np
import torch
from torch import nn

from medm2g.core.config.run_config import RunConfig, run_config_to_dict
from medm2g.core.errors import DivergenceError
from medm2g.core.graph.engine import Stage
from medm2g.core.io.checkpoints import write_json
from medm2g.core.progress import progress
from medm2g.core.training.ema import ParameterEMA
from medm2g.core.training.engine import Engine
from medm2g.core.training.experiment_log import stage_log
from medm2g.core.training.history import append_history, draw_curves, read_history, truncate_history
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.shards import Batching, Shard
from medm2g.core.training.state import load_training_state, save_training_state

logger = logging.getLogger("medm2g.train")

StepLoss = Callable[[Shard], "tuple[torch.Tensor, dict[str, float]]"]


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    fraction = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction)))


def step_seed(seed: int, stage: Stage, step: int) -> int:
    """The seed of everything random in step ``step`` of ``stage``."""
    return seed * 1_000_003 + stage.index * 10_007 + step


def nonfinite_skips(engine: Engine) -> int:
    """How many steps with a non-finite loss or gradients a stage may skip before it stops:
    ``acceleration.skip_nonfinite_steps`` where the run config has that field, else 0 (stop at
    the first)."""
    return int(getattr(engine.settings, "skip_nonfinite_steps", 0))


class FiniteStep:
    """The prepared optimizer as :meth:`Engine.step` sees it: ``step()`` applies the update only when
    every gradient is finite (``checks_gradients``; off under a gradient scaler, which skips
    overflowing steps itself) and records whether it did."""

    def __init__(self, optimizer: torch.optim.Optimizer, parameters: list[nn.Parameter], checks_gradients: bool):
        self.optimizer, self.parameters, self.checks_gradients = optimizer, parameters, checks_gradients
        self.finite_gradients = True

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def __getattr__(self, name: str):
        return getattr(self.optimizer, name)

    def step(self) -> None:
        gradients = [p.grad for p in self.parameters if p.grad is not None]
        self.finite_gradients = not (self.checks_gradients and gradients) or bool(
            torch.stack([torch.isfinite(g).all() for g in gradients]).all())
        if self.finite_gradients:
            self.optimizer.step()


def _divergence(stage: Stage, step: int, steps: int, loss: float, checkpoint: int, state_path) -> DivergenceError:
    problem = f"loss is {loss}" if not math.isfinite(loss) else f"gradients are not finite (loss {loss:.4g})"
    kept = (f"its last checkpoint (step {checkpoint}) is kept in {state_path}" if checkpoint
            else "it had no checkpoint yet and will start again from its first step")
    return DivergenceError(
        f"stage {stage.index} ({stage.title}) diverged: {problem} at step {step + 1} of {steps}; {kept}; "
        f"lower its learning rate (or raise its warm-up) and run the same command to resume")


def run_steps(stage: Stage, layout: RunLayout, stateful: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer,
              step_loss: StepLoss, steps: int, checkpoint_every: int, seed: int, batching: Batching, engine: Engine,
              warmup_steps: int = 0, max_grad_norm: float | None = None,
              pictures: Callable[[], Mapping[str, np.ndarray]] | None = None) -> tuple[list[dict], float]:
    """Run (or resume) ``steps`` optimisation steps of ``batching``'s batches on ``engine``; returns
    the whole loss log (on the main process; empty on the others) and this session's seconds.

    ``stateful`` holds the trained modules: accelerate wraps them with ``step_loss`` for the
    launched processes, and they (with the optimizer, the schedule and the EMA) are what a
    checkpoint saves. With ``acceleration.ema_decay`` the trained parameters hold their EMA
    when this returns. A non-finite loss or gradient raises :class:`DivergenceError` (see the
    module's docstring). Every checkpoint's rows also go to the experiment log (``RUN/logs``), and at
    the end the curves and what ``pictures`` draws (called on the main process only)."""
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: warmup_cosine(k, steps, warmup_steps))
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    ema = ParameterEMA(parameters, engine.settings.ema_decay) if engine.settings.ema_decay > 0 else None
    saved = {**stateful, **({"ema": ema} if ema is not None else {})}
    model, prepared = engine.prepare(stateful, step_loss, optimizer)
    state_path, history_path = layout.stage_state(stage), layout.stage_history(stage)
    experiment = stage_log(layout, stage, engine.settings.log_with, engine.is_main)
    start = 0
    if state_path.is_file():
        start, extra = load_training_state(state_path, saved, optimizer, scheduler=schedule)
        if engine.accelerator.scaler is not None and "grad_scaler" in extra:
            engine.accelerator.scaler.load_state_dict(extra["grad_scaler"])
        if engine.is_main:
            truncate_history(history_path, start)
        logger.info("%s: resuming at step %d of %d", stage.title, start, steps)
    elif history_path.exists() and engine.is_main:
        history_path.unlink()

    guarded = FiniteStep(prepared, parameters, checks_gradients=engine.accelerator.scaler is None)
    allowed, skipped, checkpoint = nonfinite_skips(engine), 0, start
    pending: list[dict] = []
    started = time.perf_counter()
    bar = progress(range(start, steps), desc=f"stage {stage.index} {stage.title}", unit="step", total=steps - start)
    for step in bar:
        seed_value = step_seed(seed, stage, step)
        torch.manual_seed((seed_value + 7_777_777 * engine.process) % 2**63)  # dropout: its own masks per process
        loss, logs = engine.step(model, guarded, parameters, engine.shards(batching, step, seed_value), max_grad_norm)
        finite = math.isfinite(loss) and guarded.finite_gradients
        with warnings.catch_warnings():  # a skipped first step: the schedule still counts it, on purpose
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            schedule.step()
        if not finite:
            skipped += 1
            if skipped > allowed:
                if engine.is_main and pending:
                    append_history(history_path, pending)  # the climb before it, for the curves
                    experiment.rows(pending)
                experiment.close()
                engine.release()
                raise _divergence(stage, step, steps, loss, checkpoint, state_path)
            logger.warning("%s: step %d skipped: %s (%d of %d skips allowed)", stage.title, step + 1,
                           f"loss {loss}" if not math.isfinite(loss) else "non-finite gradients", skipped, allowed)
        if ema is not None and finite:
            ema.update()
        if finite:
            pending.append({"step": step, "loss": loss, **logs, "lr": schedule.get_last_lr()[0],
                            "seconds": time.perf_counter() - started})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss:.4f}")
        done = step + 1
        if done % checkpoint_every == 0 or done == steps:
            if engine.is_main:
                append_history(history_path, pending)
                experiment.rows(pending)
                if done < steps:
                    scaler = engine.accelerator.scaler
                    save_training_state(state_path, saved, optimizer, done, scheduler=schedule,
                                        extra={"grad_scaler": scaler.state_dict()} if scaler is not None else None)
            checkpoint = done
            pending = []
            logger.info("%s: step %d/%d loss %.4f", stage.title, done, steps, loss)
    if ema is not None:
        ema.copy_to_parameters()
    engine.share_buffers(stateful.values())
    engine.release()
    history = read_history(history_path) if engine.is_main else []
    if history:
        draw_curves(history, layout.stage_curves(stage), f"stage {stage.index}: {stage.title}",
                    keys=[k for k in history[0] if k not in ("step", "seconds", "lr")])
    if engine.is_main and experiment.active:
        experiment.pictures({"curves": layout.stage_curves(stage), **(pictures() if pictures is not None else {})},
                            step=steps)
    experiment.close()
    return history, time.perf_counter() - started


@attrs.frozen
class StageResult:
    """A stage of a run: its record, and whether it was already complete in the run folder."""

    stage: Stage
    record: dict
    skipped: bool


def stage_record(stage: Stage, records: int, steps: int, seconds: float, history: list[dict], config: RunConfig,
                 stage_details: Mapping[str, object] | None = None, **details: object) -> dict:
    """What every stage's record says (the stage, its data, steps, time, last losses, the config),
    then what is particular to the stage (``details``)."""
    return {
        "stage": {"index": stage.index, "kind": stage.kind.value, "modalities": list(stage.modalities),
                  "trains": [str(g) for g in stage.trains], "frozen": [str(g) for g in stage.frozen],
                  **(stage_details or {})},
        "datasets": [str(d) for d in stage.datasets],
        "records": records,
        "steps": steps,
        "seconds_this_session": round(seconds, 2),
        "final": history[-1] if history else {},
        "config": run_config_to_dict(config),
        **details,
    }


def complete_stage(layout: RunLayout, stage: Stage, record: dict, engine: Engine | None = None) -> dict:
    """Write the stage's record (which marks it complete) and drop its resumable state: on the main
    process (the only one that writes), after the others have finished the stage too."""
    if engine is not None:
        engine.wait()
    if engine is None or engine.is_main:
        write_json(layout.stage_record(stage), record)
        layout.stage_state(stage).unlink(missing_ok=True)
    if engine is not None:
        engine.wait()
    return record
