"""``medm2g demo``: the main job end to end, in one folder a newcomer opens first.

Phantom cohort, the whole plan of the demo's graph (the paper's, with SynDiff and vq-ar beside it
on the same data), the evaluation (its headline tasks on more subjects), MRI -> CT beside its
baselines and the run's SynDiff, the demo's targets, sample grids of every
task, loss curves, ``metrics.json`` and ``report.md``. Every phase is timed and
the folder is an ordinary run folder, so ``medm2g generate`` and ``medm2g eval`` work
on it afterwards and an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from medm2g.core.apps.baselines.comparison import compare_translation
from medm2g.core.apps.baselines.regression import pair_datasets
from medm2g.core.apps.demo.report import write_report
from medm2g.core.apps.demo.showcase import write_showcase
from medm2g.core.apps.demo.targets import HEADLINE_IMAGE_TASKS, demo_targets
from medm2g.core.config.run_config import RunConfig, run_config_to_dict
from medm2g.core.evaluation.run_eval import evaluate_run
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.io.checkpoints import read_json, write_json
from medm2g.core.metrics.retrieval import retrieval_to_dict
from medm2g.core.training.history import draw_run_curves, read_history
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import open_run
from medm2g.core.training.trainer import train
from medm2g.registry import ModalityKind, ModalityRegistry

logger = logging.getLogger("medm2g.demo")

PHASES = ("data and plan", "training", "evaluation", "baselines", "samples", "report")
BASELINE_TRANSLATIONS = (("mri", "ct"),)
"""Translations the demo sets beside the pix2pix-style baseline and the target's unconditioned LDM."""


def headline_tasks(run: TrainedRun) -> list[tuple[str, str]]:
    """The (source, target) tasks the demo scores on its larger held-out set: those of
    :data:`HEADLINE_IMAGE_TASKS` the run has, and every task into a text modality (the reports)."""
    sources, targets = run.conditionable(), run.generatable()
    tasks = [task for task in HEADLINE_IMAGE_TASKS if task[0] in sources and task[1] in targets]
    tasks += [(source, target) for target in targets if run.registry[target].spec.kind == ModalityKind.TEXT
              for source in sources if source != target]
    return tasks


def translation_baselines(run: TrainedRun, plan, evaluation, folder: Path, steps: int | None,
                          seed: int) -> dict[str, list[dict]]:
    """"source->target" -> rows: medm2g's (from the evaluation) beside the pix2pix-style baseline and the
    target's LDM without a condition, on the subjects the evaluation scored that task on."""
    found = {}
    for source, target in BASELINE_TRANSLATIONS:
        task = [row for row in evaluation.generation if (row.source, row.target) == (source, target)]
        ours = next((row for row in task if row.backend == "medm2g"), None)
        if ours is None or not pair_datasets(plan.graph, source, target):
            continue
        rows = compare_translation(run, plan, evaluation.manifest, source, target, folder, ours.subjects, steps, seed,
                                   rows_wanted=("pix2pix", "unconditioned"))
        trained = [{"model": row.backend, "scores": row.scores, "seconds_per_image": None,
                    "training": f"the run's {row.backend} edge", "subjects": row.subjects,
                    "fid_features": row.fid_features, "run_edge": True} for row in task if row.backend != "medm2g"]
        medm2g = {"model": "medm2g", "scores": ours.scores, "seconds_per_image": None, "training": "the run's plan",
                  "subjects": ours.subjects, "fid_features": ours.fid_features}
        found[f"{source}->{target}"] = [medm2g, *trained, *rows]
    return found


def _phase(index: int, name: str) -> None:
    logger.info("[%d/%d] %s", index, len(PHASES), name)


def run_demo(graph_path: Path, registry: ModalityRegistry, config: RunConfig, out: Path, *, eval_subjects: int,
             eval_steps: int | None, showcase_subjects: int, command: str, oracle: tuple[str, ...] = (),
             headline_subjects: int | None = None) -> dict:
    """Run every phase into ``out``; returns the metrics written to ``out/metrics.json``."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    layout = RunLayout(out)

    _phase(1, PHASES[0])
    clock = time.perf_counter()
    prepared = open_run(graph_path, out, config, registry=registry)
    plan = prepared.plan
    seconds["data and plan"] = time.perf_counter() - clock

    _phase(2, PHASES[1])
    clock = time.perf_counter()
    results = train(prepared)
    seconds["training"] = time.perf_counter() - clock
    histories = {result.stage.title: read_history(layout.stage_history(result.stage)) for result in results}
    curves = draw_run_curves(histories, out / "curves.png")

    _phase(3, PHASES[2])
    clock = time.perf_counter()
    run = TrainedRun.open(out, registry, device=config.device)
    headline = {task: headline_subjects or eval_subjects for task in headline_tasks(run)}
    evaluation = evaluate_run(run, subjects=eval_subjects, steps=eval_steps, seed=config.seed, command=command,
                              ladder=True, oracle=[m for m in oracle if m in plan.graph.modalities],
                              task_subjects=headline)
    seconds["evaluation"] = time.perf_counter() - clock

    _phase(4, PHASES[3])
    clock = time.perf_counter()
    baselines = translation_baselines(run, plan, evaluation, out / "baselines", eval_steps, config.seed)
    seconds["baselines"] = time.perf_counter() - clock

    _phase(5, PHASES[4])
    clock = time.perf_counter()
    showcase = write_showcase(run, plan, evaluation.manifest, out / "samples",
                              subjects=showcase_subjects, seed=config.seed, steps=eval_steps, command=command)
    seconds["samples"] = time.perf_counter() - clock

    _phase(6, PHASES[5])
    seconds["total"] = time.perf_counter() - started
    generation = [{"source": s.source, "target": s.target, "backend": s.backend,
                   "trained_together": s.trained_together, "subjects": s.subjects, "scores": s.scores,
                   "fid_features": s.fid_features} for s in evaluation.generation]
    metrics = {
        "command": command,
        "seed": config.seed,
        "config": run_config_to_dict(prepared.config),  # as bound: the graph's windows included
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "stages": [{"stage": r.stage.title, "seconds": r.record.get("seconds_this_session"), "steps": r.record.get("steps"),
                    "final": r.record.get("final", {}), "resumed_complete": r.skipped} for r in results],
        "retrieval": retrieval_to_dict(evaluation.retrieval),
        "targets": demo_targets(generation, baselines, round(seconds["total"], 1)),
        "generation": generation,
        "translation_baselines": baselines,
        "evaluation_settings": evaluation.settings,
        "finding_ladder": evaluation.ladder,
        "samples": showcase,
        "pictures": {"plan": str(layout.plan_picture), "curves": str(curves),
                     "generation": str(evaluation.written["picture"]), "retrieval": str(layout.eval_dir / "retrieval.png"),
                     **{name: str(path) for name, path in evaluation.written.items()
                        if name.startswith("vq_ar_heat_maps")}},
        "vq_ar": read_json(evaluation.written["vq_ar_json"]) if "vq_ar_json" in evaluation.written else None,
    }
    write_json(out / "metrics.json", metrics)
    write_report(out / "report.md", metrics, plan, evaluation)
    return metrics
