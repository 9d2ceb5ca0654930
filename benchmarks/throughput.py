"""Training and generation throughput of one imaging modality's latent diffusion model, at the
CPU default size and at the paper's, with the FLOPs of a training step.

For each run config (preset or file): the modality's VAE and denoiser as that config builds
them; a training step is the LDM step of ``medm2g train`` (frozen VAE encode, prompt context,
forward, backward, AdamW); generation is one denoiser forward per DDIM step, timed and scaled to
the config's sampling steps plus one VAE decode. On CUDA the step runs under bf16 autocast and
the achieved matrix throughput is reported against ``--peak-tflops`` (H100 SXM dense bf16: 989).

    python benchmarks/throughput.py [--configs demo paper] [--modality ct] [--steps 4] [--device cpu]

Prints a table and writes results/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from medm2g.core.config.run_config import load_run_config
from medm2g.core.diffusion.attention import configure_attention
from medm2g.core.diffusion.conditional import condition_context
from medm2g.registry import load_modalities


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(config_name: str, modality: str, batch: int | None, steps: int, device: torch.device,
            peak_tflops: float | None) -> dict:
    config = load_run_config(config_name)
    registry = config.modalities(load_modalities())
    spec = registry[modality].spec
    batch = batch or config.ldm.batch_size
    vae = registry[modality].vae(config.size).to(device).eval().requires_grad_(False)
    denoiser = registry[modality].unet(config.size, config.embed_dim).to(device).train()
    attention = configure_attention(denoiser, config.attention, device).name
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=1e-4)
    images = torch.rand(batch, spec.channels, *spec.image_size, device=device) * 2 - 1
    context = condition_context(torch.randn(batch, config.embed_dim, device=device), torch.ones(batch, dtype=torch.bool,
                                                                                              device=device))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def train_step() -> None:
        with torch.no_grad(), autocast:
            latents = vae.encode(images)
        timesteps = torch.randint(0, 1000, (batch,), device=device)
        noise = torch.randn_like(latents)
        with autocast:
            predicted = denoiser(latents + noise, timesteps, context)
            loss = torch.nn.functional.mse_loss(predicted.float(), noise.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        train_step()
    flops_per_step = counter.get_total_flops()
    times = []
    for _ in range(steps):
        synchronise(device)
        started = time.perf_counter()
        train_step()
        synchronise(device)
        times.append(time.perf_counter() - started)
    step_seconds = statistics.median(times[1:] if len(times) > 1 else times)

    denoiser.eval()
    latents = torch.randn(batch, *spec.latent_shape, device=device)
    forward_times = []
    with torch.no_grad(), autocast:
        for _ in range(max(2, steps)):
            synchronise(device)
            started = time.perf_counter()
            denoiser(latents, torch.full((batch,), 500, device=device), context)
            synchronise(device)
            forward_times.append(time.perf_counter() - started)
        synchronise(device)
        started = time.perf_counter()
        vae.decode(latents)
        synchronise(device)
        decode_seconds = time.perf_counter() - started
    forward_seconds = statistics.median(forward_times[1:])
    # classifier-free guidance runs the denoiser twice per step (conditioned and null context)
    sample_seconds = 2 * forward_seconds * config.diffusion.sampling_steps + decode_seconds
    result = {"config": config_name, "size": config.size.value, "modality": modality, "device": str(device),
              "attention": attention, "image_size": list(spec.image_size), "latent_shape": list(spec.latent_shape),
              "batch": batch, "denoiser_parameters_m": round(sum(p.numel() for p in denoiser.parameters()) / 1e6, 2),
              "train_step_seconds": round(step_seconds, 4), "train_samples_per_second": round(batch / step_seconds, 3),
              "train_tflop_per_sample": round(flops_per_step / batch / 1e12, 4),
              "achieved_tflops": round(flops_per_step / step_seconds / 1e12, 3),
              "sampling_steps": config.diffusion.sampling_steps,
              "generation_images_per_second": round(batch / sample_seconds, 4),
              "bf16": device.type == "cuda"}
    if peak_tflops:
        result["fraction_of_peak"] = round(result["achieved_tflops"] / peak_tflops, 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["demo", "paper"])
    parser.add_argument("--modality", default="ct")
    parser.add_argument("--batch", type=int, help="default: each config's LDM batch size")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense matrix peak (H100 SXM bf16: 989)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "throughput.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for name in args.configs:
        rows.append(measure(name, args.modality, args.batch, args.steps, device, args.peak_tflops))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| config | device | image -> latent | batch | UNet params (M) | train samples/s | TFLOP / sample | "
          "achieved TFLOP/s | images/s generated (DDIM steps) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} ({r['size']}) | {r['device']}{' bf16' if r['bf16'] else ''} | "
              f"{'x'.join(map(str, r['image_size']))} -> {'x'.join(map(str, r['latent_shape']))} | {r['batch']} | "
              f"{r['denoiser_parameters_m']} | {r['train_samples_per_second']} | {r['train_tflop_per_sample']} | "
              f"{r['achieved_tflops']}{' (' + str(round(100 * r['fraction_of_peak'], 1)) + ' % of peak)' if 'fraction_of_peak' in r else ''} | "
              f"{r['generation_images_per_second']} ({r['sampling_steps']}) |")
    out = args.out if device.type == "cpu" else args.out.with_name(f"throughput-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(out.read_text()) if out.is_file() else {}
    existing.update({r["config"]: r for r in rows})
    out.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
