"""Is bf16 autocast or channels_last worth it for training on this CPU? Measured, not assumed.

One LDM training step of an imaging denoiser at the demo's size and batch (frozen VAE encode,
forward, backward, AdamW), in four settings: float32, bf16 autocast, channels_last, both. The
settings are interleaved round-robin (every round runs each once, in a rotating order), so a busy
neighbour or a clock change hits them alike; the first round is warm-up and dropped. Prints the
median seconds per step and each setting's ratio to float32 with the spread of per-round ratios.

    python benchmarks/cpu_precision.py [--config demo] [--modality ct] [--rounds 12]

Writes results/cpu_precision.json (with the CPU's flags, thread count and load average).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from medm2g.core.config.run_config import load_run_config
from medm2g.core.diffusion.attention import configure_attention
from medm2g.core.diffusion.conditional import condition_context
from medm2g.registry import load_modalities

SETTINGS = ("float32", "bf16", "channels_last", "bf16+channels_last")


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx512", "amx")))


def build(config_name: str, modality: str, setting: str, seed: int = 0):
    config = load_run_config(config_name)
    registry = config.modalities(load_modalities())
    spec = registry[modality].spec
    torch.manual_seed(seed)
    vae = registry[modality].vae(config.size).eval().requires_grad_(False)
    denoiser = registry[modality].unet(config.size, config.embed_dim).train()
    configure_attention(denoiser, config.attention, torch.device("cpu"))
    if "channels_last" in setting:
        denoiser = denoiser.to(memory_format=torch.channels_last)
        vae = vae.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=1e-4)
    batch = config.ldm.batch_size
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, spec.channels, *spec.image_size, generator=generator) * 2 - 1
    if "channels_last" in setting:
        images = images.contiguous(memory_format=torch.channels_last)
    context = condition_context(torch.randn(batch, config.embed_dim, generator=generator),
                                torch.ones(batch, dtype=torch.bool))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in setting else nullcontext()

    def step() -> float:
        started = time.perf_counter()
        with torch.no_grad(), autocast:
            latents = vae.encode(images, generator=torch.Generator().manual_seed(1))
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(2))
        timesteps = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(3))
        with autocast:
            predicted = denoiser(latents.float() + noise, timesteps, context)
            loss = torch.nn.functional.mse_loss(predicted.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    return step, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument("--modality", default="ct")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    steps = {setting: build(args.config, args.modality, setting)[0] for setting in SETTINGS}
    times: dict[str, list[float]] = {setting: [] for setting in SETTINGS}
    for index in range(args.rounds + 1):
        order = SETTINGS[index % len(SETTINGS):] + SETTINGS[:index % len(SETTINGS)]
        for setting in order:
            seconds = steps[setting]()
            if index:  # round 0 warms up
                times[setting].append(seconds)
    base = times["float32"]
    rows = []
    for setting in SETTINGS:
        ratios = sorted(t / b for t, b in zip(times[setting], base))
        rows.append({"setting": setting, "median_seconds": round(statistics.median(times[setting]), 4),
                     "min_seconds": round(min(times[setting]), 4),
                     "ratio_to_float32": round(statistics.median(times[setting]) / statistics.median(base), 3),
                     "per_round_ratio_median": round(statistics.median(ratios), 3),
                     "per_round_ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)]})
    record = {"config": args.config, "modality": args.modality, "rounds": args.rounds,
              "batch": load_run_config(args.config).ldm.batch_size, "threads": torch.get_num_threads(),
              "load_average": os.getloadavg(), "cpu_flags": cpu_flags(), "torch": torch.__version__, "rows": rows}
    print(f"{args.modality} LDM training step, {args.config} size, batch {record['batch']}, {record['threads']} threads, "
          f"{args.rounds} interleaved rounds, load {record['load_average'][0]:.2f}")
    print("| setting | median s/step | min | ratio to float32 | per-round ratio (range) |")
    print("|---|---|---|---|---|")
    for row in rows:
        low, high = row["per_round_ratio_range"]
        print(f"| {row['setting']} | {row['median_seconds']:.3f} | {row['min_seconds']:.3f} | "
              f"{row['ratio_to_float32']:.2f} | {row['per_round_ratio_median']:.2f} ({low:.2f}-{high:.2f}) |")
    out = Path(__file__).parent / "results" / "cpu_precision.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
