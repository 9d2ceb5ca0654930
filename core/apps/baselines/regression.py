"""The pix2pix-style baseline for image-to-image translation: a UNet regressing the target image
from the source image with an L1 loss (pix2pix's generator objective without its discriminator).

It is the strongest simple answer to "MRI to CT on paired data": deterministic, trained on
exactly the pairs the cross-guided round sees, for the same number of steps and batch size
as the target's LDM. It cannot go between modalities it has no pairs for; medm2g can.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import torch

from medm2g.core.graph.pair_graph import PairGraph
from medm2g.core.io.checkpoints import load_tensors, read_json, save_tensors, write_json
from medm2g.core.models.translation_unet import RegressionUNet
from medm2g.core.training.batches import batch_indices, make_batch
from medm2g.core.training.data import paired_records
from medm2g.core.training.encoders import seeded_init
from medm2g.registry import ModalityRegistry

logger = logging.getLogger("medm2g.baselines")


def pair_datasets(graph: PairGraph, source: str, target: str) -> list[str]:
    return [d for edge in graph.pairs if {edge.a, edge.b} == {source, target} for d in edge.dataset]


def train_regression(graph: PairGraph, source: str, target: str, registry: ModalityRegistry, steps: int,
                     batch_size: int, learning_rate: float, seed: int, device: torch.device,
                     weights: Path) -> tuple[RegressionUNet, dict]:
    """Train (or load, when ``weights`` exists) the baseline on the graph's source-target pairs."""
    datasets = pair_datasets(graph, source, target)
    if not datasets:
        raise ValueError(f"{graph.source}: no paired dataset of {source} and {target} for the regression baseline")
    source_spec, target_spec = registry[source].spec, registry[target].spec
    with seeded_init(seed + 11, f"{source}->{target}"):
        model = RegressionUNet(source_spec.channels, target_spec.channels, target_spec.image_size[0])
    model.to(device)
    record_path = weights.with_suffix(".json")
    if weights.is_file() and record_path.is_file():
        model.load_state_dict(load_tensors(weights))
        return model.eval(), read_json(record_path)
    data = paired_records(graph, datasets, [source, target], registry, split="train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    started, losses = time.perf_counter(), []
    model.train()
    for step in range(steps):
        batch = make_batch(data, batch_indices(len(data), min(batch_size, len(data)), seed + 97, step))
        prediction = model(batch[source].to(device))
        loss = (prediction - batch[target].to(device)).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if (step + 1) % max(1, steps // 4) == 0:
            logger.info("regression %s->%s: step %d/%d L1 %.4f", source, target, step + 1, steps, losses[-1])
    save_tensors(weights, model.state_dict(), {"baseline": f"regression {source}->{target}", "steps": str(steps)})
    record = {"steps": steps, "batch_size": batch_size, "records": len(data),
              "seconds": round(time.perf_counter() - started, 1), "final_l1": losses[-1]}
    write_json(record_path, record)
    return model.eval(), record


@torch.no_grad()
def predict(model: RegressionUNet, sources: Sequence[torch.Tensor], device: torch.device,
            batch_size: int = 32) -> list[torch.Tensor]:
    outputs = []
    for start in range(0, len(sources), batch_size):
        batch = torch.stack(list(sources[start:start + batch_size])).to(device)
        outputs += list(model(batch).clamp(-1, 1).cpu())
    return outputs
