"""The optimisation loop every stage shares: steps, checkpoints, resume, progress, loss log.

A stage supplies what differs (its modules, optimizer, batches and the loss of one
micro-batch); this module does what must not differ between stages: the step runs on the
:class:`Engine` (processes, micro-batches, precision), every random number of step k is
seeded from (seed, stage, k), state is saved atomically every
``checkpoint_every`` steps, a stopped stage resumes from its last state with
the log truncated to match, and a progress bar shows the stage, step, loss and speed.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Mapping

import attrs
import torch
from torch import nn

from medm2g.core.config.run_config import RunConfig, run_config_to_dict
from medm2g.core.graph.engine import Stage
from medm2g.core.io.checkpoints import write_json
from medm2g.core.progress import progress
from medm2g.core.training.ema import ParameterEMA
from medm2g.core.training.engine import Engine
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


def run_steps(stage: Stage, layout: RunLayout, stateful: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer,
              step_loss: StepLoss, steps: int, checkpoint_every: int, seed: int, batching: Batching, engine: Engine,
              warmup_steps: int = 0, max_grad_norm: float | None = None) -> tuple[list[dict], float]:
    """Run (or resume) ``steps`` optimisation steps of ``batching``'s batches on ``engine``; returns
    the whole loss log (on the main process; empty on the others) and this session's seconds.

    ``stateful`` holds the trained modules: accelerate wraps them with ``step_loss`` for the
    launched processes, and they (with the optimizer, the schedule and the EMA) are what a
    checkpoint saves. With ``acceleration.ema_decay`` the trained parameters hold their EMA
    when this returns."""
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: warmup_cosine(k, steps, warmup_steps))
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    ema = ParameterEMA(parameters, engine.settings.ema_decay) if engine.settings.ema_decay > 0 else None
    saved = {**stateful, **({"ema": ema} if ema is not None else {})}
    model, prepared = engine.prepare(stateful, step_loss, optimizer)
    state_path, history_path = layout.stage_state(stage), layout.stage_history(stage)
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

    pending: list[dict] = []
    started = time.perf_counter()
    bar = progress(range(start, steps), desc=f"stage {stage.index} {stage.title}", unit="step", total=steps - start)
    for step in bar:
        seed_value = step_seed(seed, stage, step)
        torch.manual_seed((seed_value + 7_777_777 * engine.process) % 2**63)  # dropout: its own masks per process
        loss, logs = engine.step(model, prepared, parameters, engine.shards(batching, step, seed_value), max_grad_norm)
        schedule.step()
        if ema is not None:
            ema.update()
        pending.append({"step": step, "loss": loss, **logs, "lr": schedule.get_last_lr()[0],
                        "seconds": time.perf_counter() - started})
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss:.4f}")
        done = step + 1
        if done % checkpoint_every == 0 or done == steps:
            if engine.is_main:
                append_history(history_path, pending)
                if done < steps:
                    scaler = engine.accelerator.scaler
                    save_training_state(state_path, saved, optimizer, done, scheduler=schedule,
                                        extra={"grad_scaler": scaler.state_dict()} if scaler is not None else None)
            pending = []
            logger.info("%s: step %d/%d loss %.4f", stage.title, done, steps, loss)
    if ema is not None:
        ema.copy_to_parameters()
    engine.release()
    history = read_history(history_path) if engine.is_main else []
    if history:
        draw_curves(history, layout.stage_curves(stage), f"stage {stage.index}: {stage.title}",
                    keys=[k for k in history[0] if k not in ("step", "seconds", "lr")])
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
