"""Framework overhead: one cross-guided round's training step in medm2g against the same step
written by hand, on the same models, records and random draws, with the steps alternated.

medm2g's step is :func:`medm2g.core.training.loop.run_steps` driving a round built by
:func:`medm2g.core.training.cross_guided.build_round`: seeding, the step's shard and its
per-sample generators, the frozen encodings, the loss, accelerate's prepared module and
optimizer, the finiteness checks, clipping, the LR schedule, the loss log and the progress bar.
The hand-written step does the same maths in plain torch on a second copy of the round's
models: index the batch, encode with the frozen VAEs and prompt encoders, draw each sample's
posterior latent, timestep, noises and condition dropout from its own generator (seeded by
medm2g's formula, so both loops draw the same numbers), noise both latents at one t, each
denoiser attends to the other's V([z_t, f]), MSE, backward, clip, Adam, LR step. Both loops
start from the same weights and train on the same batches, so their losses agree step by
step (``tests/core/training/test_overhead_benchmark.py`` holds them to 1e-6).

Two comparisons, each its own pair of loops:

* **overhead**: medm2g without the latent cache against the hand loop that encodes every step;
* **cache**: medm2g with the latent cache (its default) against a hand loop that also
  precomputes every record's posterior and prompt embedding once, before the steps: what the
  cache saves is not counted as medm2g's gain.

The steps alternate in ABBA order (medm2g, hand, hand, medm2g, ...), so a drift in the
machine's speed hits both alike; each pair of steps k gives a ratio medm2g_k / hand_k. After
``--warmup`` pairs, ``--pairs`` pairs are measured (at least 20). Reported per loop: min and
median seconds per step; per comparison: the ratio of the medians and the median of the
per-pair ratios with its interquartile range and extremes. The load average and the thread
settings are recorded with the numbers.

    python benchmarks/overhead.py RUN [--pairs 24] [--warmup 3] [--round 3]

RUN is a trained run folder with its rounds (``medm2g demo --out RUN`` or ``--quick``).
Prints the tables and writes results/overhead.json.
"""

from __future__ import annotations

if __name__ == "__main__":  # as `medm2g` does at start-up: thread pools sized before torch loads
    from medm2g.core.threads import configure_threads

    configure_threads()

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import attrs
import torch

from medm2g.core.config.run_config import RunConfig, load_run_config
from medm2g.core.diffusion.conditional import condition_context
from medm2g.core.diffusion.schedule import training_scheduler, training_target
from medm2g.core.threads import usable_cores
from medm2g.core.training.batches import batch_indices
from medm2g.core.training.cross_guided import Round, build_round
from medm2g.core.training.engine import Engine
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.loop import run_steps, step_seed, warmup_cosine
from medm2g.core.training.run import Run, load_run_plan
from medm2g.core.training.shards import _sample_seed
from medm2g.registry import load_modalities

MIN_PAIRS = 20


@attrs.frozen
class Setting:
    """A run's round, ready to be built any number of times."""

    plan: object
    stage: object
    registry: object
    config: RunConfig
    layout: RunLayout
    device: torch.device

    def run(self, config: RunConfig, engine: Engine) -> Run:
        """The run as a round sees it, with ``config`` (the cache on or off) and ``engine``."""
        return Run.for_plan(self.plan, self.registry, config, self.layout.root, engine)


def load_setting(run: Path, round_number: int, device: str | None = None) -> Setting:
    layout = RunLayout(run)
    config = load_run_config(layout.config)
    if device:
        config = attrs.evolve(config, device=device)
    # the hand loop is the paper's round step: both latents noised to one t
    config = attrs.evolve(config, cross_guidance=attrs.evolve(config.cross_guidance, timesteps="shared"))
    acceleration = config.acceleration
    if acceleration.mixed_precision != "no" or acceleration.gradient_accumulation_steps != 1 or acceleration.ema_decay:
        raise SystemExit("the hand loop is the float32, one micro-batch, no-EMA step: run on a run with the default "
                         "acceleration settings")
    registry = config.modalities(load_modalities())
    plan = load_run_plan(layout, registry)
    stage = plan.rounds[round_number - 1]
    chosen = torch.device(config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    return Setting(plan, stage, registry, config, layout, chosen)


class HandLoop:
    """The round's step in plain torch, on ``round_``'s models (a copy of its own), records and draws."""

    def __init__(self, setting: Setting, round_: Round, total_steps: int, precomputed: bool):
        config, self.device = setting.config, setting.device
        self.config, self.stage, self.round = config, setting.stage, round_
        self.pair = setting.stage.modalities
        self.parameters = [p for group in round_.optimizer.param_groups for p in group["params"]]
        self.optimizer = torch.optim.Adam(self.parameters, lr=config.cross_guidance.learning_rate,
                                          weight_decay=config.cross_guidance.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: warmup_cosine(k, total_steps, config.cross_guidance.warmup_steps))
        self.scheduler = training_scheduler(config.diffusion)
        self.table = self._precompute() if precomputed else None

    def _inputs(self, indices, modality):
        values = [self.round.data[i][modality] for i in indices]
        return torch.stack(values).to(self.device) if isinstance(values[0], torch.Tensor) else values

    @torch.no_grad()
    def _precompute(self) -> dict:
        """Every record's posterior (mean, logvar) and prompt embedding, once, as a latent cache holds them."""
        table = {}
        for m in self.pair:
            parts = []
            for start in range(0, len(self.round.data), 32):
                inputs = self._inputs(range(start, min(start + 32, len(self.round.data))), m)
                mean, logvar = self.round.vaes[m].posterior(inputs)
                parts.append((mean.float(), logvar.float(), self.round.encoders[m](inputs).float()))
            table[m] = tuple(torch.cat(column) for column in zip(*parts))
        return table

    def step(self, k: int) -> tuple[float, float]:
        """Step ``k``: (its loss, its seconds)."""
        started = time.perf_counter()
        config, sides, vaes, pair = self.config, self.round.sides, self.round.vaes, self.pair
        seed_value = step_seed(config.seed, self.stage, k)
        torch.manual_seed(seed_value % 2**63)  # medm2g seeds the global generator per step (dropout)
        indices = batch_indices(len(self.round.data), self.round.batching.batch_size, config.seed + self.stage.index, k)
        generators = [torch.Generator().manual_seed(_sample_seed(seed_value, p)) for p in range(len(indices))]
        latents, embeddings = {}, {}
        with torch.no_grad():
            for m in pair:
                if self.table is not None:
                    mean, logvar, embeddings[m] = (column[indices].to(self.device) for column in self.table[m])
                else:
                    inputs = self._inputs(indices, m)
                    mean, logvar = vaes[m].posterior(inputs)
                    mean, logvar, embeddings[m] = mean.float(), logvar.float(), self.round.encoders[m](inputs).float()
                latents[m] = torch.cat([vaes[m].sample_latents(mean[i:i + 1], logvar[i:i + 1], generator=g)
                                        for i, g in enumerate(generators)])
        size = len(indices)
        t = torch.cat([torch.randint(0, self.scheduler.config.num_train_timesteps, (1,), generator=g)
                       for g in generators]).to(self.device)
        noise = {m: torch.stack([torch.randn(latents[m].shape[1:], generator=g) for g in generators]).to(self.device)
                 for m in pair}
        keep = (torch.stack([torch.rand((), generator=g) for g in generators])
                >= config.diffusion.condition_dropout).to(self.device)
        noisy = {m: self.scheduler.add_noise(latents[m], noise[m], t) for m in pair}
        loss = 0.0
        for target, other in (pair, pair[::-1]):
            if target in self.round.trained_sides or other in self.round.trained_sides:
                guidance = sides[other].context_encoder(noisy[other], t, sides[other].adaptation(size))
                predicted = sides[target].denoiser(noisy[target], t, condition_context(embeddings[other], keep), guidance)
                loss = loss + torch.nn.functional.mse_loss(
                    predicted.float(), training_target(self.scheduler, latents[target], noise[target], t).float())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
        self.optimizer.step()
        self.schedule.step()
        value = float(loss.detach())  # the loss, as medm2g logs it: one sync per step
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return value, time.perf_counter() - started


class _SteppedEngine(Engine):
    """medm2g's engine, calling ``before_step(k)`` as step k takes its shard (after the loop seeded it)."""

    def __init__(self, settings, device, before_step):
        super().__init__(settings, device)
        self.before_step = before_step

    def shards(self, batching, step, step_seed_value):
        self.before_step(step)
        return super().shards(batching, step, step_seed_value)


def alternate(setting: Setting, cached: bool, pairs: int, warmup: int) -> dict:
    """``warmup + pairs`` steps of medm2g and of the hand loop, in ABBA order; their losses and seconds.

    medm2g's step k is timed from the moment it takes its shard to the moment step k + 1 does
    (a whole turn of its loop); it runs one step more than measured, whose end is not seen."""
    config = attrs.evolve(setting.config, latent_cache=cached)
    measured = warmup + pairs
    total = measured + 1
    hand = HandLoop(setting, build_round(setting.run(config, Engine(config.acceleration, setting.device)),
                                         setting.stage), total, precomputed=cached)
    hand_losses: list[float | None] = [None] * measured
    hand_seconds: list[float | None] = [None] * measured
    starts: dict[int, float] = {}
    order: list[str] = []  # the steps as they ran
    medm2g_seconds: list[float | None] = [None] * measured

    def run_hand(k: int) -> None:
        if k < measured and hand_losses[k] is None:
            state = torch.get_rng_state()  # medm2g's step seeded the global generator already
            hand_losses[k], hand_seconds[k] = hand.step(k)
            order.append(f"hand {k}")
            torch.set_rng_state(state)

    def before_step(k: int) -> None:
        now = time.perf_counter()
        if k - 1 in starts and k - 1 < measured:
            medm2g_seconds[k - 1] = now - starts[k - 1]
        if k % 2 == 1:  # pairs k-1 (medm2g first) and k (hand first): ABBA
            run_hand(k - 1)
            run_hand(k)
        if k < measured:
            order.append(f"medm2g {k}")
        starts[k] = time.perf_counter()

    engine = _SteppedEngine(config.acceleration, setting.device, before_step)
    round_ = build_round(setting.run(config, engine), setting.stage)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        history, _ = run_steps(setting.stage, RunLayout(scratch), round_.stateful(), round_.optimizer,
                               round_.step_loss, total, total, config.seed, round_.batching, engine,
                               config.cross_guidance.warmup_steps, max_grad_norm=1.0)
    run_hand(measured - 1)  # in case the loop ended before its hook ran it (it runs each step once)
    load_after = os.getloadavg()
    losses = {row["step"]: row["loss"] for row in history}
    return {
        "cached": cached, "warmup_pairs": warmup, "pairs": pairs, "order": order,
        "medm2g_losses": [losses.get(k) for k in range(measured)], "hand_losses": hand_losses,
        "medm2g_seconds": medm2g_seconds[warmup:], "hand_seconds": hand_seconds[warmup:],
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
    }


def summarise(result: dict) -> dict:
    """min and median per loop; the median of per-pair ratios with quartiles and extremes."""
    medm2g, hand = result["medm2g_seconds"], result["hand_seconds"]
    ratios = sorted(a / b for a, b in zip(medm2g, hand))
    quartiles = statistics.quantiles(ratios, n=4)
    differences = [abs(a - b) for a, b in zip(result["medm2g_losses"], result["hand_losses"])]
    return {
        "medm2g_min": min(medm2g), "medm2g_median": statistics.median(medm2g),
        "hand_min": min(hand), "hand_median": statistics.median(hand),
        "ratio_of_medians": statistics.median(medm2g) / statistics.median(hand),
        "ratio_of_minima": min(medm2g) / min(hand),
        "pair_ratio_median": statistics.median(ratios), "pair_ratio_quartiles": [quartiles[0], quartiles[2]],
        "pair_ratio_range": [ratios[0], ratios[-1]],
        "largest_loss_difference": max(differences),
    }


def thread_settings() -> dict:
    return {"usable_cores": usable_cores(), "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            **{name: os.environ.get(name, "") for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--pairs", type=int, default=24, help=f"measured pairs of steps (at least {MIN_PAIRS})")
    parser.add_argument("--warmup", type=int, default=3, help="pairs run first and not measured")
    parser.add_argument("--round", type=int, default=3, help="which round (1-based) of the run's plan")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "overhead.json")
    args = parser.parse_args()
    if args.pairs < MIN_PAIRS:
        parser.error(f"--pairs {args.pairs}: at least {MIN_PAIRS}, or the spread says little")
    setting = load_setting(args.run, args.round, args.device)
    report = {"run": str(args.run.resolve()), "round": setting.stage.title, "device": str(setting.device),
              "size": setting.config.size.value, "batch_size": setting.config.cross_guidance.batch_size,
              "threads": thread_settings(), "date": time.strftime("%Y-%m-%d")}
    for name, cached in (("overhead", False), ("cache", True)):
        result = alternate(setting, cached, args.pairs, args.warmup)
        report[name] = {**result, "summary": summarise(result)}
        print(f"{name}: done, load average {result['load_average']}", flush=True)
    print(format_tables(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")


def format_tables(report: dict) -> str:
    lines = [f"{report['round']}, batch {report['batch_size']}, {report['size']} size, {report['device']}; "
             f"threads {report['threads']}", "",
             "| comparison | loop | min s/step | median s/step |", "|---|---|---|---|"]
    names = {"overhead": ("medm2g, no latent cache", "by hand, encoding every step"),
             "cache": ("medm2g, latent cache (default)", "by hand, latents precomputed once")}
    for key, (ours, theirs) in names.items():
        s = report[key]["summary"]
        lines.append(f"| {key} | {theirs} | {s['hand_min']:.4f} | {s['hand_median']:.4f} |")
        lines.append(f"| {key} | {ours} | {s['medm2g_min']:.4f} | {s['medm2g_median']:.4f} |")
    lines += ["", "| comparison | pairs | ratio of medians | ratio of minima | median per-pair ratio | quartiles | range | "
              "largest loss difference |", "|---|---|---|---|---|---|---|---|"]
    for key in names:
        s, pairs = report[key]["summary"], report[key]["pairs"]
        lines.append(f"| {key} | {pairs} | {s['ratio_of_medians']:.3f} | {s['ratio_of_minima']:.3f} | "
                     f"{s['pair_ratio_median']:.3f} | {s['pair_ratio_quartiles'][0]:.3f}-{s['pair_ratio_quartiles'][1]:.3f} | "
                     f"{s['pair_ratio_range'][0]:.3f}-{s['pair_ratio_range'][1]:.3f} | "
                     f"{s['largest_loss_difference']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
