"""Encode each training sample once: the frozen VAE's posterior and the frozen prompt encoder's
embedding, kept on disk and reused by every later stage and epoch.

After their stages the VAEs and prompt encoders never change, yet every LDM step and every
round step used to run both on the batch again. The cache keeps, per sample, the posterior
(mean, log-variance) and the embedding; a step then draws each sample's latent from the cached
posterior with the sample's own generator, the draw it makes from a freshly encoded posterior,
so training with and without the cache is the same computation.

A cache file belongs to one modality, one VAE and one encoder: its name carries a hash of their
weights, so retraining either (or a new run config building them differently) starts a new
file and never reads stale latents. Within a file, samples are keyed by a hash of the sample
itself in model space (pixels after the grid, window and intensity mapping, or the report's
text), so a changed file, another preprocessing or another grid is simply a miss. A VAE without
``posterior`` and ``sample_latents`` (a plugin's own) is not cached: it encodes every step.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from medm2g.core.checkpoints import load_tensors, read_metadata, save_tensors

logger = logging.getLogger("medm2g.train")


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

    def __init__(self, folder: Path, modality: str, vae: nn.Module, encoder: nn.Module):
        self.modality, self.vae, self.encoder = modality, vae, encoder
        self.path = Path(folder) / f"{modality}-{weights_hash(vae, encoder)[:20]}.safetensors"
        self.rows: dict[str, int] = {}
        self.mean = self.logvar = self.embedding = None
        if self.path.is_file():
            tensors = load_tensors(self.path)
            self.rows = {key: row for row, key in enumerate(json.loads(read_metadata(self.path)["samples"]))}
            self.mean, self.logvar, self.embedding = tensors["mean"], tensors["logvar"], tensors["embedding"]
        self.hits = self.misses = 0

    @torch.no_grad()
    def lookup(self, samples: Sequence[torch.Tensor | str], device: torch.device,
               batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, logvar, embedding) of every sample, in order, encoding (and saving) the missing ones."""
        keys = [sample_hash(s) for s in samples]
        unique = dict(zip(keys, samples))
        missing = [key for key in unique if key not in self.rows]
        if missing:
            self._add(missing, [unique[key] for key in missing], device, batch_size)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        rows = torch.tensor([self.rows[key] for key in keys])
        return self.mean[rows].to(device), self.logvar[rows].to(device), self.embedding[rows].to(device)

    def _add(self, keys: list[str], samples: list, device: torch.device, batch_size: int) -> None:
        means, logvars, embeddings = [], [], []
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            inputs = list(chunk) if isinstance(chunk[0], str) else torch.stack(chunk).to(device)
            mean, logvar = self.vae.posterior(inputs)
            means.append(mean.float().cpu())
            logvars.append(logvar.float().cpu())
            embeddings.append(self.encoder(inputs).float().cpu())
        new = [torch.cat(parts) for parts in (means, logvars, embeddings)]
        if self.mean is None:
            self.mean, self.logvar, self.embedding = new
        else:
            self.mean, self.logvar, self.embedding = (torch.cat([old, add]) for old, add in
                                                      zip((self.mean, self.logvar, self.embedding), new))
        for key in keys:
            self.rows[key] = len(self.rows)
        order = sorted(self.rows, key=self.rows.get)
        save_tensors(self.path, {"mean": self.mean, "logvar": self.logvar, "embedding": self.embedding},
                     {"samples": json.dumps(order), "modality": self.modality})
        logger.info("latent cache %s: %d samples encoded, %d in all", self.path.name, len(keys), len(order))


def warm(cache: LatentCache, data, modality: str, device: torch.device) -> None:
    """Encode every sample of a stage's dataset up front (one pass, batched), so no step waits."""
    cache.lookup([data[i][modality] for i in range(len(data))], device)
