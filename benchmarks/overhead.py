"""Framework overhead: one cross-guided round's training step in medm2g against the same maths
written by hand with the diffusers models, on the same models, batch and process.

medm2g's step is :func:`medm2g.core.training.loop.run_steps` driving a round built by
:func:`medm2g.core.training.cross_guided.build_round` (seeding, batching, frozen encodings,
loss, clipping, optimizer and LR schedule, the loss log, the progress bar, all on the accelerate
engine with its per-sample random draws). The hand-written
loop does the same per step with plain torch: index a batch, encode with the frozen VAEs and
prompt encoders, noise both latents at one t, each denoiser attends to the other's V([z_t, f]),
MSE, backward, clip, Adam, LR step. Both run without the latent cache (the hand loop has none);
the cached medm2g step is timed as well. Steady-state step times (first steps excluded),
alternated A/B over several rounds; the ratio is of the medians.

    python benchmarks/overhead.py RUN [--steps 12] [--repeats 3] [--round 3]

RUN is a trained run folder with its rounds (``medm2g demo --out RUN`` or ``--quick``).
Prints a table and writes results/overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import attrs
import torch

from medm2g.core.config.run_config import load_run_config
from medm2g.core.diffusion.conditional import condition_context
from medm2g.core.diffusion.schedule import training_scheduler, training_target
from medm2g.core.training.batches import batch_indices
from medm2g.core.training.cross_guided import build_round
from medm2g.core.training.engine import Engine
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.loop import run_steps, warmup_cosine
from medm2g.core.training.run import load_run_plan
from medm2g.registry import load_modalities

WARMUP_STEPS = 2


def medm2g_step_seconds(plan, stage, registry, config, layout, device, steps: int) -> float:
    """Median steady-state seconds per step of medm2g's own loop (from its loss log's clock)."""
    engine = Engine(config.acceleration, device)
    round_ = build_round(plan, stage, registry, config, layout, engine)
    with tempfile.TemporaryDirectory() as scratch:
        history, _ = run_steps(stage, RunLayout(scratch), round_.stateful(), round_.optimizer, round_.step_loss,
                               steps, steps, config.seed, round_.batching, engine, config.cross_guidance.warmup_steps,
                               max_grad_norm=1.0)
    clock = [row["seconds"] for row in history]
    return statistics.median(b - a for a, b in zip(clock[WARMUP_STEPS:], clock[WARMUP_STEPS + 1:]))


def hand_step_seconds(plan, stage, registry, config, layout, device, steps: int) -> float:
    """The same maths by hand; median seconds per step after the warm-up steps."""
    round_ = build_round(plan, stage, registry, config, layout, Engine(config.acceleration, device))
    a, b = stage.modalities
    sides, vaes, encoders, data = round_.sides, round_.vaes, round_.encoders, round_.data
    parameters = [p for group in round_.optimizer.param_groups for p in group["params"]]
    optimizer = torch.optim.Adam(parameters, lr=config.cross_guidance.learning_rate,
                                 weight_decay=config.cross_guidance.weight_decay)
    lr = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: warmup_cosine(k, steps, config.cross_guidance.warmup_steps))
    scheduler = training_scheduler(config.diffusion)
    times = []
    for step in range(steps):
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(step)
        items = [data[i] for i in batch_indices(len(data), round_.batching.batch_size, config.seed, step)]
        inputs = {m: (torch.stack([item[m] for item in items]).to(device) if isinstance(items[0][m], torch.Tensor)
                      else [item[m] for item in items]) for m in (a, b)}
        with torch.no_grad():
            latents = {m: vaes[m].encode(inputs[m], generator=generator) for m in (a, b)}
            embeddings = {m: encoders[m](inputs[m]).float() for m in (a, b)}
        size = len(items)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (size,), generator=generator).to(device)
        noise = {m: torch.randn(latents[m].shape, generator=generator).to(device) for m in (a, b)}
        noisy = {m: scheduler.add_noise(latents[m], noise[m], t) for m in (a, b)}
        keep = (torch.rand(size, generator=generator) >= config.diffusion.condition_dropout).to(device)
        loss = 0.0
        for target, other in ((a, b), (b, a)):
            if target in round_.trained_sides or other in round_.trained_sides:
                guidance = sides[other].context_encoder(noisy[other], t, sides[other].adaptation(size))
                predicted = sides[target].denoiser(noisy[target], t, condition_context(embeddings[other], keep), guidance)
                loss = loss + torch.nn.functional.mse_loss(
                    predicted.float(), training_target(scheduler, latents[target], noise[target], t).float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        lr.step()
        float(loss.detach())  # the loop logs the loss: one sync per step, as medm2g's
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times[WARMUP_STEPS + 1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--round", type=int, default=3, help="which round (1-based) of the run's plan")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "overhead.json")
    args = parser.parse_args()
    layout = RunLayout(args.run)
    config = load_run_config(layout.config)
    if args.device:
        config = attrs.evolve(config, device=args.device)
    registry = config.modalities(load_modalities())
    plan = load_run_plan(layout, registry)
    stage = plan.rounds[args.round - 1]
    device = torch.device(config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    uncached = attrs.evolve(config, latent_cache=False)
    framework, hand, cached = [], [], []
    for repeat in range(args.repeats):
        framework.append(medm2g_step_seconds(plan, stage, registry, uncached, layout, device, args.steps))
        hand.append(hand_step_seconds(plan, stage, registry, uncached, layout, device, args.steps))
        cached.append(medm2g_step_seconds(plan, stage, registry, config, layout, device, args.steps))
        print(f"repeat {repeat + 1}: medm2g {framework[-1]:.4f} s, by hand {hand[-1]:.4f} s, "
              f"medm2g cached {cached[-1]:.4f} s", flush=True)
    result = {"run": str(args.run.resolve()), "round": stage.title, "device": str(device),
              "batch_size": config.cross_guidance.batch_size, "size": config.size.value, "steps": args.steps,
              "medm2g_seconds_per_step": statistics.median(framework), "hand_seconds_per_step": statistics.median(hand),
              "medm2g_cached_seconds_per_step": statistics.median(cached), "threads": torch.get_num_threads()}
    result["overhead_ratio"] = result["medm2g_seconds_per_step"] / result["hand_seconds_per_step"]
    result["cached_ratio"] = result["medm2g_cached_seconds_per_step"] / result["hand_seconds_per_step"]
    print(f"\n| {stage.title}, batch {result['batch_size']}, {device} | s / step | ratio to hand-written |")
    print("|---|---|---|")
    print(f"| hand-written diffusers loop | {result['hand_seconds_per_step']:.4f} | 1.000 |")
    print(f"| medm2g (no latent cache) | {result['medm2g_seconds_per_step']:.4f} | {result['overhead_ratio']:.3f} |")
    print(f"| medm2g (latent cache, default) | {result['medm2g_cached_seconds_per_step']:.4f} | "
          f"{result['cached_ratio']:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
