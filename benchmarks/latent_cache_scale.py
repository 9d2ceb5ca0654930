"""Latent cache at scale: posteriors of the paper's 4x64x64 latents for N samples, written in
shards, then read back by index in random batches, as a stage's steps read them.

A MIMIC-CXR pre-training has 377k images: their posteriors (mean and log-variance, float32) take
about 50 GB, so the cache must never hold them in memory or rewrite them when samples are added.
This writes N synthetic posteriors through the real :class:`LatentCache` (a stand-in VAE returns
random posteriors: only the storage is measured), then times opening the cache, reading random
batches by index, and the resident memory the reads add: the process's own, and the
memory-mapped shard pages the kernel keeps while there is room.

    python benchmarks/latent_cache_scale.py [--samples 20000] [--batch 32 256] [--folder DIR]

Prints a table and writes results/latent_cache_scale.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from medm2g.core.training.latent_cache import LatentCache, warm

LATENT = (4, 64, 64)
EMBED = 768


class RandomPosterior(nn.Module):
    """A stand-in frozen VAE and prompt encoder: random posteriors of the paper's latent shape."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.generator = torch.Generator().manual_seed(0)

    def posterior(self, inputs: torch.Tensor):
        size = inputs.shape[0]
        return torch.randn(size, *LATENT, generator=self.generator), torch.randn(size, *LATENT, generator=self.generator)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.randn(inputs.shape[0], EMBED, generator=self.generator)


def resident_mb() -> dict[str, float]:
    """Resident memory now (Linux): anonymous (the process's own) and file-backed (memory-mapped
    shard pages, which the kernel drops under pressure)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--reads", type=int, default=50)
    parser.add_argument("--folder", type=Path, default=None, help="where to write the cache (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latent_cache_scale.json")
    args = parser.parse_args()
    model = RandomPosterior()
    records = [{"x": torch.tensor([float(i)])} for i in range(args.samples)]  # distinct keys, tiny inputs
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        started = time.perf_counter()
        cache = LatentCache(Path(folder), "x", model, model)
        warm(cache, records, "x", torch.device("cpu"), chunk=1024)
        write_seconds = time.perf_counter() - started
        disk_gb = sum(p.stat().st_size for p in cache.path.glob("shard-*.safetensors")) / 1e9
        shards = len(list(cache.path.glob("shard-*.safetensors")))
        del cache
        before = resident_mb()
        started = time.perf_counter()
        indexed = warm(LatentCache(Path(folder), "x", model, model), records, "x", torch.device("cpu"), chunk=1024)
        open_seconds = time.perf_counter() - started
        generator = torch.Generator().manual_seed(1)
        reads = {}
        for batch in args.batch:
            times = []
            for _ in range(args.reads):
                indices = torch.randint(0, args.samples, (batch,), generator=generator).tolist()
                started = time.perf_counter()
                mean, logvar, embedding = indexed.read(indices, torch.device("cpu"))
                times.append(time.perf_counter() - started)
            reads[batch] = statistics.median(times)
        after = resident_mb()
        added_mb = {name: after[name] - before[name] for name in after}
    result = {"samples": args.samples, "latent_shape": list(LATENT), "shards": shards, "disk_gb": round(disk_gb, 2),
              "write_seconds": round(write_seconds, 1), "open_and_index_seconds": round(open_seconds, 1),
              "read_seconds": {str(b): round(s, 5) for b, s in reads.items()},
              "resident_mb_added_by_reading": {k: round(v, 1) for k, v in added_mb.items()},
              "bytes_per_sample": round(disk_gb * 1e9 / args.samples)}
    mimic = 377_110 * result["bytes_per_sample"] / 1e9
    print("\n| samples | shards | on disk | write | open + index | " +
          " | ".join(f"read {b} rows" for b in args.batch) + " | memory added by reads: own (mapped pages) |")
    print("|---|---|---|---|---|" + "---|" * len(args.batch) + "---|")
    print(f"| {args.samples} | {shards} | {disk_gb:.2f} GB | {write_seconds:.0f} s | {open_seconds:.1f} s | " +
          " | ".join(f"{reads[b] * 1000:.1f} ms" for b in args.batch) + f" | {added_mb['RssAnon']:.0f} MB ({added_mb['RssFile']:.0f} MB) |")
    print(f"\nMIMIC-CXR's 377,110 images at {result['bytes_per_sample']} bytes each: {mimic:.0f} GB on disk")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
