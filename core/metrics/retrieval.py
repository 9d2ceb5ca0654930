"""Cross-modal retrieval recall@k: does the shared space put a subject's modalities together?

For every ordered pair (A -> B) of modalities, each held-out subject's A embedding
queries the B embeddings of all held-out subjects having both; a hit at k means its
own B is among the k most similar. Pairs never trained together (X-ray -> MRI) are
reported beside trained ones: central alignment should align them through the centre.

Ties (two subjects with the same report, so the same text embedding) are broken at
random *in expectation*: a partner tied with t others behind h strictly better
items counts ``clamp((k - h) / (t + 1), 0, 1)`` of a hit, instead of winning or
losing by array order.
"""

from __future__ import annotations

from itertools import permutations
from pathlib import Path
from typing import Mapping, Sequence

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from medm2g.core.data.manifest import Manifest
from medm2g.core.data.paired_dataset import PairedDataset, collate_samples
from medm2g.core.errors import DataError
from medm2g.core.graph.engine import TrainingPlan
from medm2g.core.io.checkpoints import write_json

RECALL_AT = (1, 5, 10)


def recall_at_k(query: torch.Tensor, gallery: torch.Tensor, ks: Sequence[int] = RECALL_AT) -> dict[int, float]:
    """Recall@k of row i of ``query`` finding row i of ``gallery`` by cosine similarity."""
    if query.shape != gallery.shape or query.ndim != 2:
        raise ValueError(f"query and gallery must be (N, D) of one shape, got {tuple(query.shape)} and {tuple(gallery.shape)}")
    similarity = F.normalize(query.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T
    true = similarity.diagonal().unsqueeze(1)
    others = ~torch.eye(len(query), dtype=torch.bool, device=similarity.device)
    # a relative tolerance: identical inputs give embeddings equal only to rounding
    tolerance = 1e-5
    better = ((similarity > true + tolerance) & others).sum(1).float()
    tied = ((similarity - true).abs() <= tolerance).logical_and(others).sum(1).float()
    return {k: float(((k - better) / (tied + 1)).clamp(0, 1).mean()) for k in ks}


@torch.no_grad()
def embed(encoder: nn.Module, samples: list, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """Embeddings of a list of samples (tensors or strings), in batches, in eval mode."""
    encoder.eval()
    chunks = []
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        inputs = torch.stack(batch).to(device) if isinstance(batch[0], torch.Tensor) else list(batch)
        chunks.append(encoder(inputs).float().cpu())
    return torch.cat(chunks)


@attrs.frozen
class RetrievalRow:
    source: str
    target: str
    trained_together: bool  # an alignment stage saw this pair's data
    through: tuple[str, ...]  # the star path linking the two
    subjects: int
    recall: Mapping[int, float]

    @property
    def chance(self) -> dict[int, float]:
        return {k: min(1.0, k / self.subjects) for k in self.recall}


def held_out_embeddings(manifest: Manifest, encoders: Mapping[str, nn.Module], registry,
                        device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    """modality -> subject id -> embedding, for every record of the manifest having that modality."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for modality, encoder in encoders.items():
        if not manifest.having(modality):
            continue
        dataset = PairedDataset(manifest, [modality], registry, split=None)
        items = collate_samples([dataset[i] for i in range(len(dataset))])
        vectors = embed(encoder, list(items[modality]), device)
        found[modality] = dict(zip(items["subject_id"], vectors))
    return found


def retrieval_table(plan: TrainingPlan, embeddings: Mapping[str, Mapping[str, torch.Tensor]]) -> list[RetrievalRow]:
    """Recall@k for every ordered pair of modalities with at least two shared held-out subjects."""
    trained = {frozenset((edge.modality, edge.via)) for edge in plan.star}
    paths = {(task.source, task.target): task.path for task in plan.tasks if task.backend == "medm2g"}
    rows = []
    for source, target in permutations(sorted(embeddings), 2):
        subjects = sorted(set(embeddings[source]) & set(embeddings[target]))
        if len(subjects) < 2:
            continue
        query = torch.stack([embeddings[source][s] for s in subjects])
        gallery = torch.stack([embeddings[target][s] for s in subjects])
        rows.append(RetrievalRow(source, target, frozenset((source, target)) in trained,
                                 paths.get((source, target), (source, target)), len(subjects),
                                 recall_at_k(query, gallery)))
    if not rows:
        raise DataError("no two modalities share two held-out subjects: cannot score retrieval")
    return rows


def format_retrieval(rows: Sequence[RetrievalRow]) -> str:
    """A Markdown table, one ordered pair per row, chance level beside each recall."""
    ks = list(rows[0].recall)
    header = "| query -> gallery | trained together | through | n | " + " | ".join(f"R@{k} (chance)" for k in ks) + " |"
    lines = [header, "|" + "---|" * (4 + len(ks))]
    for row in rows:
        cells = " | ".join(f"{row.recall[k]:.2f} ({row.chance[k]:.2f})" for k in ks)
        lines.append(f"| {row.source} -> {row.target} | {'yes' if row.trained_together else 'no'} | "
                     f"{' - '.join(row.through)} | {row.subjects} | {cells} |")
    return "\n".join(lines)


def retrieval_to_dict(rows: Sequence[RetrievalRow]) -> list[dict]:
    return [
        {"query": r.source, "gallery": r.target, "trained_together": r.trained_together, "through": list(r.through),
         "subjects": r.subjects, "recall": {str(k): v for k, v in r.recall.items()},
         "chance": {str(k): v for k, v in r.chance.items()}}
        for r in rows
    ]


def draw_retrieval(rows: Sequence[RetrievalRow], path: Path, k: int = 1) -> Path:
    """A query-by-gallery heatmap of recall@k, pairs never trained together outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r.source for r in rows} | {r.target for r in rows})
    grid = torch.full((len(names), len(names)), float("nan"))
    figure, axis = plt.subplots(figsize=(1.2 * len(names) + 1.6, 1.1 * len(names) + 1.0))
    for row in rows:
        grid[names.index(row.source), names.index(row.target)] = row.recall[k]
    image = axis.imshow(grid.numpy(), vmin=0, vmax=1, cmap="viridis")
    for row in rows:
        i, j = names.index(row.source), names.index(row.target)
        axis.text(j, i, f"{row.recall[k]:.2f}", ha="center", va="center", fontsize=8,
                  color="white" if row.recall[k] < 0.6 else "black")
        if not row.trained_together:
            axis.add_patch(plt.Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, edgecolor="#f2a541", linewidth=2))
    axis.set_xticks(range(len(names)), names)
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("gallery")
    axis.set_ylabel("query")
    chance = rows[0].chance[k]
    axis.set_title(f"held-out retrieval R@{k} (chance {chance:.2f});\norange: never trained together", fontsize=9)
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_retrieval(rows: Sequence[RetrievalRow], folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {
        "json": write_json(folder / "retrieval.json", retrieval_to_dict(rows)),
        "table": folder / "retrieval.md",
        "picture": draw_retrieval(rows, folder / "retrieval.png"),
    }
    written["table"].write_text(format_retrieval(rows) + "\n", encoding="utf-8")
    return written
