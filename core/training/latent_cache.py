"""Encode each training sample once: the frozen VAE's posterior and the frozen prompt encoder's
embedding, kept on disk and reused by every later stage and epoch.

After their stages the VAEs and prompt encoders never change, yet every LDM step and every
round step used to run both on the batch again. The cache keeps, per sample, the posterior
(mean, log-variance) and the embedding; a step then draws each sample's latent from the cached
posterior with the sample's own generator, the draw it makes from a freshly encoded posterior,
so training with and without the cache is the same computation.

A cache belongs to one modality, one VAE and one encoder: its folder name carries a hash of their
weights, so retraining either (or a new run config building them differently) starts a new
cache and never reads stale latents. Within it, samples are keyed by a hash of the sample itself
in model space (pixels after the grid, window and intensity mapping, or the report's text), so a
changed file, another preprocessing or another grid is simply a miss. A VAE without
``posterior`` and ``sample_latents`` (a plugin's own) is not cached: it encodes every step.

The folder holds shards of at most ``shard_rows`` samples, written once and never rewritten, and
read memory-mapped row by row: a MIMIC-CXR-sized cache (377k posteriors of 4x64x64, about 50 GB)
is never held in memory or copied when samples are added. A stage looks samples up once by
content (:func:`warm`), then by dataset index, so its steps neither read nor hash images.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from torch import nn

from medm2g.core.io.checkpoints import read_metadata, save_tensors

logger = logging.getLogger("medm2g.train")

PARTS = ("mean", "logvar", "embedding")
Location = tuple[int, int]  # (shard, row)


def weights_hash(*modules: nn.Module) -> str:
    """SHA-256 over the modules' state dicts (names, shapes, dtypes, values)."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes, any dtype
    return digest.hexdigest()


def sample_hash(sample: torch.Tensor | str) -> str:
    """Identity of one sample in model space."""
    if isinstance(sample, str):
        return hashlib.sha256(b"text:" + sample.encode("utf-8")).hexdigest()
    tensor = sample.detach().cpu().float().contiguous()
    return hashlib.sha256(f"{tuple(tensor.shape)}:".encode() + tensor.numpy().tobytes()).hexdigest()


def cacheable(vae: nn.Module) -> bool:
    return callable(getattr(vae, "posterior", None)) and callable(getattr(vae, "sample_latents", None))


class LatentCache:
    """Posteriors and embeddings of one modality's samples under one (VAE, encoder) pair."""

    def __init__(self, folder: Path, modality: str, vae: nn.Module, encoder: nn.Module, shard_rows: int = 4096):
        self.modality, self.vae, self.encoder, self.shard_rows = modality, vae, encoder, shard_rows
        self.path = Path(folder) / f"{modality}-{weights_hash(vae, encoder)[:20]}"
        self.locations: dict[str, Location] = {}
        self._shards: list[Path] = sorted(self.path.glob("shard-*.safetensors")) if self.path.is_dir() else []
        for number, shard in enumerate(self._shards):
            for row, key in enumerate(json.loads(read_metadata(shard)["samples"])):
                self.locations[key] = (number, row)
        self._open: dict[int, object] = {}
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.locations)

    @torch.no_grad()
    def locate(self, samples: Sequence[torch.Tensor | str], device: torch.device,
               batch_size: int = 32) -> list[Location]:
        """Where each sample's encodings are, encoding (and writing) the missing ones first."""
        keys = [sample_hash(s) for s in samples]
        unique = dict(zip(keys, samples))
        missing = [key for key in unique if key not in self.locations]
        if missing:
            self._add(missing, [unique[key] for key in missing], device, batch_size)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return [self.locations[key] for key in keys]

    def read(self, locations: Sequence[Location], device: torch.device) -> tuple[torch.Tensor, ...]:
        """(mean, logvar, embedding) at ``locations``, in order, read from the memory-mapped shards."""
        rows = {part: [] for part in PARTS}
        for shard, row in locations:
            handle = self._handle(shard)
            for part in PARTS:
                rows[part].append(handle.get_slice(part)[row:row + 1])
        return tuple(torch.cat(rows[part]).to(device) for part in PARTS)

    def lookup(self, samples: Sequence[torch.Tensor | str], device: torch.device,
               batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, logvar, embedding) of every sample, in order, encoding (and saving) the missing ones."""
        return self.read(self.locate(samples, device, batch_size), device)

    def _handle(self, shard: int):
        if shard not in self._open:
            self._open[shard] = safe_open(str(self._shards[shard]), framework="pt")
        return self._open[shard]

    def _add(self, keys: list[str], samples: list, device: torch.device, batch_size: int) -> None:
        for start in range(0, len(samples), self.shard_rows):
            self._write_shard(keys[start:start + self.shard_rows], samples[start:start + self.shard_rows],
                              device, batch_size)
        logger.info("latent cache %s: %d samples encoded, %d in all", self.path.name, len(keys), len(self))

    def _write_shard(self, keys: list[str], samples: list, device: torch.device, batch_size: int) -> None:
        encoded: dict[str, list[torch.Tensor]] = {part: [] for part in PARTS}
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            inputs = list(chunk) if isinstance(chunk[0], str) else torch.stack(chunk).to(device)
            mean, logvar = self.vae.posterior(inputs)
            for part, value in zip(PARTS, (mean, logvar, self.encoder(inputs))):
                encoded[part].append(value.float().cpu())
        number = len(self._shards)
        path = self.path / f"shard-{number:06d}.safetensors"
        save_tensors(path, {part: torch.cat(values) for part, values in encoded.items()},
                     {"samples": json.dumps(keys), "modality": self.modality})
        self._shards.append(path)
        for row, key in enumerate(keys):
            self.locations[key] = (number, row)


class CachedRecords:
    """A stage's records looked up in a cache once, by content; then read by dataset index."""

    def __init__(self, cache: LatentCache, locations: list[Location]):
        self.cache, self.locations = cache, locations

    def read(self, indices: Sequence[int], device: torch.device) -> tuple[torch.Tensor, ...]:
        return self.cache.read([self.locations[i] for i in indices], device)


def warm(cache: LatentCache, data, modality: str, device: torch.device, chunk: int = 256) -> CachedRecords:
    """Encode every sample of a stage's dataset that the cache lacks (batched, ``chunk`` records at
    a time so that memory stays bounded), and index the dataset into the cache."""
    locations: list[Location] = []
    for start in range(0, len(data), chunk):
        samples = [data[i][modality] for i in range(start, min(start + chunk, len(data)))]
        locations += cache.locate(samples, device)
    return CachedRecords(cache, locations)
