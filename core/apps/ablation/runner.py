"""``medm2g ablate``: train the four encoder variants, score each before and after its rounds.

Layout of the output folder::

    OUT/ca1-vi1/, ca1-vi0/, ..., ca1-vi1-prompts/ one run folder per encoder variant (--encoders: some)
        eval-without-lcag/                       its scores before the rounds (the LCAG- row)
        eval/                                    its scores after them (the LCAG+ row)
    OUT/baselines/                               the regression baseline's weights
    OUT/ablation.json, ablation.md, ablation.png the table

The first variant generates the phantom cohort and trains the VAEs; the others reuse both
(VAEs see neither CA nor VI), so every row is trained on the same data with the same
autoencoders and differs only in what the ablation changes.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path

from safetensors import safe_open

from medm2g.core.apps.ablation.table import write_ablation
from medm2g.core.apps.ablation.variants import ENCODER_VARIANTS, AblationRow, EncoderVariant
from medm2g.core.apps.baselines.comparison import compare_translation
from medm2g.core.config.run_config import RunConfig, run_config_to_dict
from medm2g.core.evaluation.run_eval import evaluate_run
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.graph.engine import StageKind, TrainingPlan
from medm2g.core.io.checkpoints import read_json
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import open_run
from medm2g.core.training.trainer import train
from medm2g.registry import ModalityRegistry

logger = logging.getLogger("medm2g.ablate")

BEFORE_ROUNDS = {StageKind.ALIGNMENT, StageKind.VAE, StageKind.LDM}


def reuse_vaes(source: RunLayout, target: RunLayout, plan: TrainingPlan) -> None:
    """Copy the trained VAEs and their stage records from ``source``, so ``target`` skips those stages."""
    for stage in plan.stages_of(StageKind.VAE):
        modality = stage.modalities[0]
        for path in (source.vae(modality), source.exported(modality, "vae")):
            destination = target.root / path.relative_to(source.root)
            if path.is_dir() and not destination.exists():
                shutil.copytree(path, destination)
            elif path.is_file() and not destination.exists():
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)
        if not target.stage_dir(stage).exists():
            shutil.copytree(source.stage_dir(stage), target.stage_dir(stage))


def parameter_count(paths: list[Path]) -> int:
    """Numbers stored in safetensors files, read from their headers without loading the tensors."""
    total = 0
    for path in paths:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                total += math.prod(handle.get_slice(key).get_shape())
    return total


def _stage_seconds(layout: RunLayout, plan: TrainingPlan, kinds: set[StageKind]) -> float:
    return sum(read_json(layout.stage_record(s)).get("seconds_this_session", 0.0)
               for s in plan.stages if s.kind in kinds and layout.stage_record(s).is_file())


def run_ablation(graph_path: Path, registry: ModalityRegistry, base: RunConfig, out: Path, *, subjects: int,
                 steps: int | None, translation: tuple[str, str] | None, command: str,
                 variants: tuple[EncoderVariant, ...] = ENCODER_VARIANTS) -> dict:
    """Train and score the rows of ``variants`` (all of them by default); returns the record written to
    ``out/ablation.json``. The first variant's run makes the cohort, the VAEs and the FID yardstick."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows, comparison = [], []
    first: RunLayout | None = None
    for number, variant in enumerate(variants, start=1):
        config = variant.config(base)
        layout = RunLayout(out / variant.name)
        logger.info("[%d/%d] encoders %s", number, len(variants), variant.name)
        prepared = open_run(graph_path, layout.root, config, registry=registry)
        plan = prepared.plan
        if first is None:
            first = layout
            graph_path = Path(plan.graph.source)  # the cohort the first variant generated, for all the others
        else:
            reuse_vaes(first, layout, plan)
        for cross_guided in (False, True):
            train(prepared, kinds=set(StageKind) if cross_guided else BEFORE_ROUNDS)
            run = TrainedRun.open(layout.root, registry, device=config.device)
            # FID on one yardstick for every row: the full method's aligned encoders (each row's own
            # would measure with a different ruler, and an untrained one reads everything as alike)
            evaluation = evaluate_run(run, subjects=subjects, steps=steps, seed=config.seed, command=command,
                                      folder=layout.root / ("eval" if cross_guided else "eval-without-lcag"),
                                      fid_features=f"run:{first.root}", cross_guided=cross_guided)
            kinds = {StageKind.ALIGNMENT, StageKind.LDM} | ({StageKind.CROSS_GUIDED} if cross_guided else set())
            weights = ([layout.encoder(m) for m in run.conditionable()]
                       + [p for m in run.generatable() for p in (layout.vae(m), layout.denoiser(m))])
            added = [layout.cross_guided(m) for m in run.jointly_generatable()] if cross_guided else []
            rows.append({
                "row": AblationRow(variant.central_alignment, cross_guided, variant.visual_invariant, variant.prompts),
                "run": str(layout.root),
                "seconds": round(_stage_seconds(layout, plan, kinds), 1),
                "parameters": parameter_count(weights + added),
                "added_parameters": parameter_count(added),
                "retrieval": evaluation.retrieval,
                "generation": evaluation.generation,
            })
            if translation and variant is variants[0]:
                source, target = translation
                for entry in compare_translation(run, plan, evaluation.manifest, source, target, out / "baselines",
                                                 subjects, steps, config.seed, cross_guided=cross_guided):
                    if cross_guided or entry["model"].startswith("medm2g"):
                        entry["model"] += "" if cross_guided else ", before the rounds (LCAG-)"
                        comparison.append(entry)
    vae_seconds = _stage_seconds(first, plan, {StageKind.VAE})
    settings = {"command": command, "seed": base.seed, "subjects": subjects, "steps": steps,
                "vae_seconds_shared": round(vae_seconds, 1), "seconds_total": round(time.perf_counter() - started, 1),
                "config": run_config_to_dict(base)}
    return write_ablation(out, rows, comparison, translation, settings)
