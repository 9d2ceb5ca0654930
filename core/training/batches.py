"""Deterministic, resumable batches: batch k of a run depends only on the seed and k.

A stage is a number of optimisation steps, not epochs: small paired datasets are
cycled, each epoch in a fresh permutation drawn from ``(seed, epoch)``. Because the
permutation of any epoch can be recomputed, a resumed run continues with exactly
the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from medm2g.core.data.paired_dataset import collate_samples


class MemoisedDataset(Dataset):
    """Reads each item once and keeps it: the phantom and other small paired sets are
    re-read every epoch otherwise, which on two cores costs more than the model. Only up to
    ``max_bytes`` of tensors are kept; past that, items are read from their files each time
    (a MIMIC-CXR-sized set does not fit in memory, and with the latent cache its steps read
    no images at all)."""

    def __init__(self, dataset: Dataset, max_bytes: int = 4 * 2**30):
        self.dataset, self.max_bytes = dataset, max_bytes
        self._items: dict[int, dict] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if index in self._items:
            return self._items[index]
        item = self.dataset[index]
        size = sum(v.element_size() * v.nelement() for v in item.values() if isinstance(v, torch.Tensor))
        if self._bytes + size <= self.max_bytes:
            self._items[index] = item
            self._bytes += size
        return item


def batch_indices(size: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The dataset indices of batch ``step``: epochs of ``size // batch_size`` full batches
    (the remainder is dropped, as contrastive losses want equal batches), shuffled per epoch."""
    if size < 2:
        raise ValueError(f"a dataset of {size} record(s) cannot make batches of 2 or more")
    batch_size = min(batch_size, size)
    per_epoch = size // batch_size
    epoch, position = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(size, generator=generator)
    return order[position * batch_size:(position + 1) * batch_size].tolist()


def make_batch(dataset: Dataset, indices: Sequence[int]) -> dict:
    return collate_samples([dataset[i] for i in indices])


def to_device(samples, device: torch.device):
    """A batch of one modality on ``device``: tensors moved, text kept as a list of str."""
    return samples.to(device) if isinstance(samples, torch.Tensor) else list(samples)
