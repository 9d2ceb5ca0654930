"""The plan stage of a ``backend: syndiff`` edge: SynDiff trained on the edge's data, unpaired.

Both modalities are drawn from the edge's manifests independently (:class:`UnpairedBatches`:
never one subject's two images in a sample), whether the manifest holds pairs or not:
SynDiff's cycle losses are what let it learn without pairs, and drawing unpaired even
from paired data keeps the claim honest. The trained model lands in
``RUN/models/<a>-<b>/syndiff.safetensors``; ``medm2g generate --backend syndiff`` and
``medm2g eval`` read it from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from medm2g.core.backends.syndiff.model import SynDiff
from medm2g.core.backends.syndiff.training import train_syndiff
from medm2g.core.backends.syndiff.unpaired import UnpairedBatches
from medm2g.core.config.run_config import RunConfig
from medm2g.core.errors import CheckpointError, ConfigError
from medm2g.core.graph.engine import Stage
from medm2g.core.graph.pair_graph import PairGraph
from medm2g.core.io.checkpoints import load_module, save_module
from medm2g.core.training.data import paired_records
from medm2g.core.training.encoders import seeded_init
from medm2g.core.training.experiment_log import ExperimentLog, stage_log
from medm2g.core.training.history import draw_curves
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.loop import complete_stage, stage_record
from medm2g.core.training.run import Run
from medm2g.registry import ModalityRegistry


def build_syndiff(registry: ModalityRegistry, a: str, b: str, config: RunConfig) -> SynDiff:
    """An untrained SynDiff for a <-> b at the modalities' image size, initialised from the run seed."""
    specs = {m: registry[m].spec for m in (a, b)}
    sizes = {m: tuple(spec.image_size or ()) for m, spec in specs.items()}
    if sizes[a] != sizes[b] or len(sizes[a]) != 2 or sizes[a][0] != sizes[a][1]:
        raise ConfigError(f"syndiff {a}-{b}: both modalities need one square image size, got {a} {sizes[a]} and "
                          f"{b} {sizes[b]}; set grids.<modality>.image_size in the run config to match")
    with seeded_init(config.seed + 13, f"syndiff {a}-{b}"):
        return SynDiff(a, b, {m: spec.channels for m, spec in specs.items()}, sizes[a][0], config.syndiff)


def fit_syndiff(graph: PairGraph, datasets: Sequence[str], a: str, b: str, registry: ModalityRegistry,
                config: RunConfig, device: torch.device, seed: int, description: str, *, state: Path,
                history: Path, curves: Path,
                experiment: ExperimentLog | None = None) -> tuple[SynDiff, list[dict], float, dict[str, int]]:
    """Train (or resume from ``state``) a SynDiff on the train split of ``datasets``, each modality
    drawn on its own, logging to ``history`` and drawing ``curves``; returns the model, the loss
    log, this session's seconds and the number of images of each modality."""
    data = {m: paired_records(graph, datasets, (m,), registry, split="train") for m in (a, b)}
    batches = UnpairedBatches(data[a], data[b], a, b, seed=seed)
    model = build_syndiff(registry, a, b, config)
    log, seconds = train_syndiff(model, batches, state, history, device, seed, config.syndiff.checkpoint_every,
                                 description=description, skip_nonfinite=config.acceleration.skip_nonfinite_steps,
                                 experiment=experiment)
    if log:
        draw_curves(log, curves, description,
                    keys=[k for k in log[0] if k not in ("step", "seconds", "r1")])  # r1: lazy, not every step
        if experiment is not None:
            experiment.pictures({"curves": curves}, step=config.syndiff.training_steps)
    if experiment is not None:
        experiment.close()
    return model.cpu(), log, seconds, {m: len(found) for m, found in data.items()}


def save_syndiff(path: Path, model: SynDiff, source: str) -> Path:
    return save_module(path, model, {"backend": "syndiff", "a": model.a, "b": model.b, "source": source,
                                     "size": str(model.diffusive[model.a].unet.config.sample_size)})


def run_syndiff_stage(run: Run, stage: Stage) -> dict:
    """Train (or resume) the SynDiff of the stage's edge; returns its record. SynDiff's alternating
    critic and generator half-steps keep their own loop: it runs on the main process, the others
    wait for it."""
    plan, registry, config, layout, engine = run.plan, run.registry, run.config, run.layout, run.engine
    a, b = stage.modalities
    edge = next(e for e in plan.translation_edges if (e.a, e.b) == (a, b))
    if not engine.is_main:
        return complete_stage(layout, stage, {}, engine)
    model, history, seconds, images = fit_syndiff(
        plan.graph, stage.datasets, a, b, registry, config, engine.device, config.seed + stage.index,
        f"stage {stage.index}: {stage.title}", state=layout.stage_state(stage), history=layout.stage_history(stage),
        curves=layout.stage_curves(stage), experiment=stage_log(layout, stage, config.acceleration.log_with))
    weights = save_syndiff(layout.translation(a, b), model, stage.title)
    return complete_stage(layout, stage, stage_record(
        stage, sum(images.values()), config.syndiff.training_steps, seconds, history, config,
        stage_details={"backend": edge.backend, "paired_data": edge.paired}, weights=str(weights), images=images),
        engine)


def load_syndiff(registry: ModalityRegistry, a: str, b: str, config: RunConfig, layout: RunLayout) -> SynDiff:
    """The trained SynDiff of edge a-b (either order) of a run, in eval mode."""
    for first, second in ((a, b), (b, a)):
        path = layout.translation(first, second)
        if path.is_file():
            return load_module(path, build_syndiff(registry, first, second, config)).eval().requires_grad_(False)
    raise CheckpointError(f"{layout.translation(a, b)}: no trained SynDiff for {a}-{b} in this run; "
                          f"its graph needs a `backend: syndiff` pair of {a} and {b}, trained by `medm2g train`")
