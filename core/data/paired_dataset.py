"""A torch dataset serving the records of a manifest that have a given set of modalities.

Samples come out in model space through each modality's reader. Volumes are
reduced to one axial slice (C, H, W): the record's ``slice`` when the manifest has
it (the phantom writes the lesion's key slice), otherwise the middle slice, so
that an image-text pair shows what the text describes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from medm2g.core.data.manifest import Manifest, ManifestRecord, is_inline_text
from medm2g.core.errors import DataError
from medm2g.registry import ModalityKind, ModalityRegistry


def key_slice(record: ManifestRecord, depth: int) -> int:
    """The slice of a ``depth``-slice volume a record stands for: its ``slice``, else the middle one."""
    return record.slice_index if record.slice_index is not None else depth // 2


class PairedDataset(Dataset):
    """``dataset[i]`` is ``{"subject_id": str, modality: sample, ...}`` for the modalities asked."""

    def __init__(self, manifest: Manifest, modalities: Sequence[str], registry: ModalityRegistry,
                 split: str | None = "train"):
        missing = [m for m in modalities if m not in manifest.modalities]
        if missing:
            raise DataError(f"{manifest.path}: no column for {', '.join(missing)} "
                            f"(columns: {', '.join(manifest.modalities)})")
        self.manifest = manifest
        self.modalities = tuple(modalities)
        self.registry = registry
        self.records: tuple[ManifestRecord, ...] = manifest.having(*modalities, split=split)
        if not self.records:
            raise DataError(f"{manifest.path}: no {split or 'any'}-split record has {' and '.join(modalities)}")

    def __len__(self) -> int:
        return len(self.records)

    def load(self, record: ManifestRecord, modality: str):
        value = record.values[modality]
        if is_inline_text(self.registry, modality, value):
            return value
        spec = self.registry[modality].spec
        sample = self.registry[modality].read(self.manifest.resolve(value))
        if spec.kind is ModalityKind.VOLUME:
            index = key_slice(record, sample.shape[0])
            if not 0 <= index < sample.shape[0]:
                raise DataError(f"{self.manifest.path}: row {record.row}: slice {index} outside the "
                                f"{sample.shape[0]} slices of {value}")
            sample = sample[index]
        return sample

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        return {"subject_id": record.subject_id, **{m: self.load(record, m) for m in self.modalities}}


def collate_samples(items: list[dict]) -> dict:
    """Stack tensors, keep strings as lists: a batch is a dict of (B, ...) tensors and lists of str."""
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch
