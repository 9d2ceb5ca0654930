"""The data a stage trains on: the records of its datasets that carry its modalities."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch.utils.data import ConcatDataset, Dataset

from medm2g.core.data.manifest import Manifest, read_manifest, validate_manifest
from medm2g.core.data.paired_dataset import PairedDataset
from medm2g.core.errors import DataError
from medm2g.core.graph.pair_graph import PairGraph
from medm2g.core.training.batches import MemoisedDataset
from medm2g.registry import ModalityRegistry


def manifest_path(graph: PairGraph, reference: str) -> Path:
    """A dataset reference of the graph as a manifest path (relative ones are relative to the graph file)."""
    path = Path(reference)
    path = path if path.is_absolute() else graph.base_dir() / path
    if not path.is_file():
        raise DataError(
            f"{path}: manifest named by {graph.source} not found; "
            f"write the phantom cohort with `medm2g data phantom --out DIR` and use DIR/medm2g.yaml, "
            f"or point the graph's dataset at your own manifest"
        )
    return path


def paired_records(graph: PairGraph, datasets: Sequence[str], modalities: Sequence[str],
                   registry: ModalityRegistry, split: str | None) -> Dataset:
    """Every record of ``datasets`` (of ``split``) with all of ``modalities``, read once and kept in memory."""
    parts: list[Dataset] = []
    for reference in datasets:
        manifest = validate_manifest(read_manifest(manifest_path(graph, reference), registry), registry)
        if manifest.having(*modalities, split=split):
            parts.append(PairedDataset(manifest, modalities, registry, split=split))
    if not parts:
        raise DataError(f"{', '.join(datasets)}: no {split or 'any'}-split record has {' and '.join(modalities)}")
    return MemoisedDataset(parts[0] if len(parts) == 1 else ConcatDataset(parts))


def training_manifests(graph: PairGraph, registry: ModalityRegistry) -> list[Manifest]:
    """Every manifest the graph's pairs train on, each once: what the finding readers are fitted on, so
    every evaluation of a run (its generation rows, a backend's own) reads with the same reader."""
    return [read_manifest(manifest_path(graph, d), registry)
            for d in dict.fromkeys(d for edge in graph.pairs for d in edge.dataset)]
