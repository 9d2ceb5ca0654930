"""The multi-flow trainer: every stage of a plan, in order, resuming where a run stopped.

Alignment stages run first (they share the live encoders), then each VAE, each
single-modality LDM and the multi-flow rounds, then the stages of other backends'
edges; every stage but alignment is trained by the runner its backend registered. A stage with a record in the run
folder is complete and skipped; one with a saved state resumes at its step.
"""

from __future__ import annotations

import logging
from typing import Callable, Collection

import torch

from medm2g.core.errors import PluginError
from medm2g.core.graph.engine import StageKind
from medm2g.core.io.checkpoints import read_json
from medm2g.core.training.alignment import align
from medm2g.core.training.loop import StageResult
from medm2g.core.training.run import Run
from medm2g.registry import ModalityRegistry

logger = logging.getLogger("medm2g.train")


def stage_runners(registry: ModalityRegistry) -> dict[str, Callable]:
    """How each stage kind trains, from the installed backends' records (``medm2g_backends``);
    every runner takes (run, stage) and returns the stage's record."""
    runners: dict[str, Callable] = {}
    for backend in registry.backends.values():
        runners.update(backend.stage_runners)
    return runners


def _runner(runners: dict[str, Callable], stage, registry: ModalityRegistry) -> Callable:
    try:
        return runners[stage.kind.value]
    except KeyError:
        raise PluginError(f"stage {stage.index} ({stage.title}): no installed backend trains {stage.kind.value!r} "
                          f"stages (installed backends: {', '.join(registry.backends) or 'none'})") from None


def train(run: Run, kinds: Collection[StageKind] | None = None) -> list[StageResult]:
    """Run (or resume) the plan's stages of ``kinds`` (default: every stage, other backends' too), in plan order, on this process's
    part of an ``accelerate launch`` (or alone).
    Stopping before the rounds (``kinds`` without CROSS_GUIDED) leaves a run that generates from its
    single-modality LDMs alone: the paper's ablation without latent cross-guided generation."""
    plan, registry, layout = run.plan, run.registry, run.layout
    runners = stage_runners(registry)
    results = align(run) if kinds is None or StageKind.ALIGNMENT in kinds else []
    for stage in plan.stages:
        if stage.kind is StageKind.ALIGNMENT or (kinds is not None and stage.kind not in kinds):
            continue
        record_path = layout.stage_record(stage)
        if record_path.is_file():
            results.append(StageResult(stage, read_json(record_path), skipped=True))
            continue
        logger.info("stage %d/%d: %s", stage.index, len(plan.stages), stage.title)
        with torch.random.fork_rng(devices=[]):
            record = _runner(runners, stage, registry)(run, stage)
        results.append(StageResult(stage, record, skipped=False))
    return results
