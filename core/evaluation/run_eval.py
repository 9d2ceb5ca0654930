"""The whole evaluation of a trained run, as ``medm2g eval`` and ``medm2g demo`` run it.

Held-out retrieval between every pair of aligned modalities (the alignment), then every
generation task, translation edges' included, scored against the same subjects' truth; everything lands in
``RUN/eval`` as JSON, Markdown and pictures, with the settings and command that made it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import attrs

from medm2g.core.data.manifest import Manifest
from medm2g.core.evaluation.generation_eval import TaskScore, evaluate_generation, write_generation_scores
from medm2g.core.evaluation.other_words import other_words_scores, write_other_words
from medm2g.core.evaluation.probes import finding_ladder, write_ladder
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.metrics.retrieval import RetrievalRow
from medm2g.core.training.alignment import evaluate_alignment, evaluation_manifest
from medm2g.core.training.run import load_run_plan


@attrs.frozen
class RunEvaluation:
    retrieval: list[RetrievalRow]
    generation: list[TaskScore]
    settings: dict
    manifest: Manifest
    written: dict[str, Path]
    ladder: dict | None = None  # "where the finding is lost" (probes.finding_ladder), when asked for
    other_words: dict | None = None  # reports in other words against the template (other_words.py), when asked for


def evaluate_run(run: TrainedRun, manifest_path: Path | None = None, subjects: int = 16, steps: int | None = None,
                 seed: int = 0, command: str = "", fid_features: str | None = None,
                 folder: Path | None = None, cross_guided: bool = True, ladder: bool = False,
                 oracle: Sequence[str] = (), only: Sequence[tuple[str, str]] | None = None,
                 task_subjects: Mapping[tuple[str, str], int] | None = None,
                 other_words: Sequence[str] = ()) -> RunEvaluation:
    """Score ``run`` on the graph's held-out manifest (or ``manifest_path``) and write RUN/eval (or
    ``folder``). ``fid_features`` names FID's feature network (default: the run's aligned encoders).
    ``ladder`` adds "where the finding is lost" (:mod:`.probes`) for data with known findings, with
    an oracle-conditioned LDM trained for each imaging modality in ``oracle``. ``only``: just these
    (source, target) generation tasks; ``task_subjects``: other subject counts for some of them (the ladder
    then reads the largest count of subjects). ``other_words``: imaging targets generated from the
    template reports and from the same findings in other words (:mod:`.other_words`)."""
    plan = load_run_plan(run.layout, run.registry)
    manifest = evaluation_manifest(plan, run.registry, manifest_path)
    retrieval = (evaluate_alignment(plan, run.registry, run.config, run.layout.root, manifest)
                 if len(plan.aligned) >= 2 else [])  # a translation-only run has no aligned space to retrieve in
    scores = evaluate_generation(run, plan, manifest, subjects=subjects, steps=steps, seed=seed,
                                 fid_features=fid_features, cross_guided=cross_guided, only=only,
                                 task_subjects=task_subjects)
    settings = {"manifest": str(manifest.path), "subjects": subjects, "steps": steps, "seed": seed,
                **({"tasks": [f"{s}:{t}" for s, t in only]} if only is not None else {}),
                **({"task_subjects": {f"{s}:{t}": n for (s, t), n in task_subjects.items()}} if task_subjects else {}),
                "fid_features": fid_features or "medm2g aligned encoders C_M (not Inception)",
                "cross_guided": cross_guided, "command": command,
                "guidance": {f"{a}:{b}": scale for (a, b), scale in run.tuned_guidance.items()}
                or f"the run config's ({run.config.diffusion.guidance_scale:g}), no tuned scales"}
    written = write_generation_scores(scores, run.registry, folder or run.layout.eval_dir, settings)
    ladder_subjects = max([subjects, *(task_subjects or {}).values()])
    found = finding_ladder(run, plan, manifest, ladder_subjects, scores, seed, oracle) if ladder or oracle else None
    if found is not None:
        written.update({f"ladder_{k}": v for k, v in write_ladder(found, folder or run.layout.eval_dir).items()})
    reworded = (other_words_scores(run, plan, manifest, ladder_subjects, other_words, seed, steps)
                if other_words else None)
    if reworded:
        written.update({f"other_words_{k}": v for k, v in write_other_words(reworded, folder or run.layout.eval_dir).items()})
    for name, backend in run.registry.backends.items():  # what a backend measures beyond the table
        if backend.evaluator is not None and any(edge.backend == name for edge in plan.translation_edges):
            written.update(backend.evaluator(run, plan, manifest, ladder_subjects, folder or run.layout.eval_dir))
    return RunEvaluation(retrieval, scores, settings, manifest, written, found, reworded)
