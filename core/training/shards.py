"""A step's batch shared out over processes and micro-batches, with random draws that do not
depend on how it was shared out.

A stage's ``batch_size`` is the batch of one optimizer step. With P launched processes and A
gradient-accumulation micro-batches, process p trains on the p-th of P equal slices of that
batch, in A micro-batches. Every random number a stage draws for a sample (its posterior
draw, timestep, noise, condition dropout, augmentation) comes from the sample's own generator,
seeded by (step seed, place in the step's batch): sample 5 of step 12 gets the same noise on
one process with the whole batch as on the second of two processes with half of it. So a run
on 2 processes trains the weights a 1-process run with the same ``batch_size`` trains, to float
rounding; only draws a plugin makes batch-wise from one generator (a VAE's own training loss)
are per micro-batch.
"""

from __future__ import annotations

from typing import Callable, Sequence

import attrs
import torch

from medm2g.core.errors import ConfigError
from medm2g.core.training.batches import batch_indices


def _sample_seed(step_seed: int, position: int) -> int:
    return (step_seed * 1_000_033 + position * 7_919 + 17) % 2**63


class SampleRandom:
    """One generator per sample of a micro-batch; each draw is stacked over the samples.

    Draws must come in the same order for every sample (they do: a stage draws the same
    things for each of its samples), which is what makes them independent of the split."""

    def __init__(self, step_seed: int, positions: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(_sample_seed(step_seed, p)) for p in positions]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, *shape: int) -> torch.Tensor:
        """(B, *shape) standard normal."""
        return torch.stack([torch.randn(shape, generator=g) for g in self.generators])

    def rand(self, *shape: int) -> torch.Tensor:
        """(B, *shape) uniform in [0, 1)."""
        return torch.stack([torch.rand(shape, generator=g) for g in self.generators])

    def randint(self, high: int) -> torch.Tensor:
        """(B,) integers in [0, high)."""
        return torch.cat([torch.randint(0, high, (1,), generator=g) for g in self.generators])

    def each_sample(self, draw: Callable[[object, torch.Generator], torch.Tensor], batch) -> torch.Tensor:
        """``draw(batch[i:i+1], generator_i)`` for every sample, concatenated: a plugin's batch-wise
        random function (an augmentation, a posterior draw) made per sample."""
        return torch.cat([draw(batch[i:i + 1], generator) for i, generator in enumerate(self.generators)])

    def latents(self, vae, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """A latent per sample from the posterior (mean, logvar), drawn with the sample's generator."""
        return torch.cat([vae.sample_latents(mean[i:i + 1], logvar[i:i + 1], generator=generator)
                          for i, generator in enumerate(self.generators)])


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@attrs.frozen
class Shard:
    """What one micro-batch of one step trains on: its dataset ``indices``, their ``positions`` in
    the step's batch, their random draws, a generator for draws made batch-wise, and ``gather``,
    which concatenates a per-sample tensor over the processes (with gradients) so that a
    contrastive loss sees every process's samples as negatives."""

    step: int
    indices: tuple[int, ...]
    positions: tuple[int, ...]
    random: SampleRandom
    generator: torch.Generator
    gather: Callable[[torch.Tensor], torch.Tensor] = _identity


@attrs.frozen
class Batching:
    """How a stage draws its steps' batches: ``batch_size`` records of a dataset of ``size``, shuffled
    per epoch from ``seed`` (see :func:`batch_indices`)."""

    size: int
    batch_size: int
    seed: int

    def __attrs_post_init__(self) -> None:
        if self.batch_size < 2 or self.batch_size > self.size:
            raise ValueError(f"batch_size {self.batch_size} must be in [2, {self.size}]")

    def indices(self, step: int) -> list[int]:
        return batch_indices(self.size, self.batch_size, self.seed, step)


def step_batch_size(requested: int, records: int, parts: int, setting: str) -> int:
    """The batch of one step: ``requested`` (or all ``records`` when fewer), rounded down to a
    multiple of ``parts`` = processes x micro-batches so that every part has the same size."""
    batch = min(requested, records)
    if batch < 2 * parts:
        raise ConfigError(f"{setting}: a batch of {batch} cannot be shared out as {parts} parts of 2 or more "
                          f"(processes x gradient_accumulation_steps = {parts}); raise it or use fewer parts")
    return batch - batch % parts


def shards(batching: Batching, step: int, step_seed: int, process: int, processes: int, micro_batches: int,
           gather: Callable[[torch.Tensor], torch.Tensor] = _identity) -> list[Shard]:
    """This process's micro-batches of ``step``: its contiguous slice of the step's batch, cut in
    ``micro_batches`` equal parts."""
    indices = batching.indices(step)
    per_part = len(indices) // (processes * micro_batches)
    if per_part * processes * micro_batches != len(indices):
        raise ValueError(f"a batch of {len(indices)} does not split into {processes} x {micro_batches} equal parts")
    parts = []
    for micro in range(micro_batches):
        start = (process * micro_batches + micro) * per_part
        positions = tuple(range(start, start + per_part))
        parts.append(Shard(step, tuple(indices[start:start + per_part]), positions,
                           SampleRandom(step_seed, positions),
                           torch.Generator().manual_seed(_sample_seed(step_seed, -1 - start)), gather))
    return parts
