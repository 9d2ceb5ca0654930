"""Really unpaired batches: the two modalities of a sample come from different subjects.

SynDiff's public loader served aligned pairs even in its "unpaired" mode, which makes
the unpaired claim untestable. Here each sample draws its A image and its B image
independently, and redraws B while it belongs to A's subject, so even a paired manifest
(MRI and CT of the same subjects) trains unpaired.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from medm2g.core.data.paired_dataset import collate_samples
from medm2g.core.errors import DataError

REDRAWS = 64
"""Attempts to find a B of another subject before giving up on a degenerate dataset."""


class UnpairedBatches:
    """``batches(step, size)``: ``{a: (size, ...), b: (size, ...), "subject_a": [...], "subject_b": [...]}``,
    a function of (seed, step) alone, so a resumed run sees the same batches."""

    def __init__(self, data_a: Dataset, data_b: Dataset, a: str, b: str, seed: int):
        self.data_a, self.data_b, self.a, self.b, self.seed = data_a, data_b, a, b, seed
        self.subjects_a = [data_a[i]["subject_id"] for i in range(len(data_a))]
        self.subjects_b = [data_b[i]["subject_id"] for i in range(len(data_b))]
        if not self.subjects_a or not self.subjects_b:
            raise DataError(f"unpaired {a}-{b}: no {a if not self.subjects_a else b} images to draw from")
        if set(self.subjects_a) == set(self.subjects_b) and len(set(self.subjects_a)) < 2:
            raise DataError(f"unpaired {a}-{b}: every image is of one subject: no pair of different subjects exists")

    def __call__(self, step: int, size: int) -> dict:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        items_a, items_b = [], []
        for index_a in torch.randint(len(self.data_a), (size,), generator=generator).tolist():
            for _ in range(REDRAWS):
                index_b = int(torch.randint(len(self.data_b), (1,), generator=generator))
                if self.subjects_b[index_b] != self.subjects_a[index_a]:
                    break
            else:
                raise DataError(f"unpaired {self.a}-{self.b}: found no {self.b} image of a subject other than "
                                f"{self.subjects_a[index_a]} in {REDRAWS} draws")
            items_a.append(self.data_a[index_a])
            items_b.append(self.data_b[index_b])
        batch_a, batch_b = collate_samples(items_a), collate_samples(items_b)
        return {self.a: batch_a[self.a], self.b: batch_b[self.b],
                "subject_a": batch_a["subject_id"], "subject_b": batch_b["subject_id"]}
