"""One translation task (MRI to CT in the paper's graph), medm2g beside its baselines, on the same
held-out subjects, scores and budget.

Rows: medm2g as trained (cross-guided by the condition's latent when the run has its rounds),
the pix2pix-style L1 regression UNet trained for the target LDM's steps and batch, SynDiff at
the same steps and batch on the same data drawn unpaired (each sample's MRI and CT from two
subjects: it never sees a pair, where the others train on pairs), and the
target's LDM sampled without any condition (the same weights with the null context: what
the condition adds). Each row also states its time per generated image.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Collection

import attrs

from medm2g.core.apps.baselines.regression import pair_datasets, predict, train_regression
from medm2g.core.backends.syndiff.model import SynDiff
from medm2g.core.backends.syndiff.stage import build_syndiff, fit_syndiff, save_syndiff
from medm2g.core.backends.syndiff.translation import translate_images
from medm2g.core.data.manifest import Manifest
from medm2g.core.evaluation.generation_eval import (
    fid_network,
    finding_readers,
    held_out_findings,
    held_out_subjects,
    score_samples,
)
from medm2g.core.generation.backends import CrossGuidedGenerator, GenerationRequest
from medm2g.core.generation.conditions import Condition
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.graph.engine import TrainingPlan
from medm2g.core.io.checkpoints import load_module, read_json, write_json
from medm2g.core.metrics.proportion import format_proportion

COMPARISON_ROWS = ("medm2g", "pix2pix", "syndiff", "unconditioned")
"""Every row :func:`compare_translation` can compute, in its order."""


def compare_translation(run: TrainedRun, plan: TrainingPlan, manifest: Manifest, source: str, target: str,
                        folder: Path, subjects: int, steps: int | None, seed: int,
                        fid_features: str | None = None, cross_guided: bool = True,
                        rows_wanted: Collection[str] = COMPARISON_ROWS) -> list[dict]:
    """Score medm2g and the baselines on ``source`` -> ``target``; one dict per row. ``rows_wanted``:
    a subset of :data:`COMPARISON_ROWS` (the demo has medm2g's row from its evaluation already, and
    no time for SynDiff)."""
    unknown = sorted(set(rows_wanted) - set(COMPARISON_ROWS))
    if unknown:
        raise ValueError(f"compare_translation: unknown rows {unknown}; rows are {', '.join(COMPARISON_ROWS)}")
    modalities = [m for m in plan.graph.modalities if m in manifest.modalities]
    records = held_out_subjects(manifest, modalities, run.registry, subjects)
    truth = [r[target] for r in records]
    sources = [r[source] for r in records]
    reader = finding_readers(plan, run.registry, [target]).get(target)
    findings = held_out_findings(manifest, [r["subject_id"] for r in records], run.registry)
    network, label = fid_network(run, target, fid_features)
    generator = CrossGuidedGenerator(run)
    rows = []

    def add(name: str, generated: list, seconds: float, training: str) -> None:
        scores = score_samples(generated, truth, reader, findings, network)
        rows.append({"model": name, "scores": scores, "seconds_per_image": round(seconds / len(generated), 3),
                     "training": training, "subjects": len(generated), "fid_features": label})

    conditions = [Condition(source, s, f"{source} {r['subject_id']}") for s, r in zip(sources, records)]
    request = GenerationRequest(outputs=[target], conditions=conditions, seed=seed, steps=steps, batch_size=16,
                                cross_guided=cross_guided)
    if "medm2g" in rows_wanted:
        cross = generator.cross_conditioning(request) if target in run.jointly_generatable() else None
        started = time.perf_counter()
        generated = [sample.outputs[target] for sample in generator.generate(request)]
        add("medm2g" + (f" (cross-guided by {cross})" if cross else " (prompt embedding only)"), generated,
            time.perf_counter() - started, "the run's plan")
    if "pix2pix" in rows_wanted:
        add_regression(add, run, plan, source, target, sources, folder)
    if "syndiff" in rows_wanted:
        add_syndiff(add, run, plan, source, target, sources, folder, request)
    if "unconditioned" in rows_wanted:
        unconditional = GenerationRequest(outputs=[target], samples_per_condition=len(records), seed=seed,
                                          steps=steps, batch_size=16)
        started = time.perf_counter()
        sampled = [sample.outputs[target] for sample in generator.generate(unconditional)]
        add(f"{target} LDM without condition", sampled, time.perf_counter() - started,
            f"the run's {target} LDM, null context")
    return rows


def add_regression(add, run: TrainedRun, plan: TrainingPlan, source: str, target: str, sources: list,
                   folder: Path) -> None:
    """The pix2pix-style row: trained (or loaded from ``folder``) at the target LDM's steps and batch."""
    ldm = run.config.ldm
    model, record = train_regression(plan.graph, source, target, run.registry, ldm.steps, ldm.batch_size,
                                     ldm.learning_rate, run.config.seed, run.device,
                                     folder / f"regression-{source}-{target}.safetensors")
    started = time.perf_counter()
    regressed = predict(model, sources, run.device)
    add("pix2pix-style L1 UNet", regressed, time.perf_counter() - started,
        f"{record['steps']} steps of {ldm.batch_size} on the {source}-{target} pairs"
        + (f", {record['seconds']:.0f} s" if record.get("seconds") else ""))


def add_syndiff(add, run: TrainedRun, plan: TrainingPlan, source: str, target: str, sources: list, folder: Path,
                request: GenerationRequest) -> None:
    """The SynDiff row: trained unpaired at the same budget, sampled with the medm2g row's seeds."""
    syndiff, record = train_syndiff_baseline(run, plan, source, target, folder)
    started = time.perf_counter()
    translated = translate_images(syndiff, target, sources, [request.row_seed(i) for i in range(len(sources))],
                                  run.device)  # the same per-row seeds as the medm2g row
    add(f"SynDiff, unpaired ({syndiff.config.steps} steps)", translated, time.perf_counter() - started,
        f"{record['steps']} steps of {record['batch_size']} on the {source}-{target} data drawn unpaired"
        + (f", {record['seconds']:.0f} s" if record.get("seconds") else ""))


def train_syndiff_baseline(run: TrainedRun, plan: TrainingPlan, source: str, target: str,
                           folder: Path) -> tuple[SynDiff, dict]:
    """SynDiff at the regression baseline's budget (the target LDM's steps and batch size) on the
    graph's source-target data, each sample's two images from different subjects; loaded when
    ``folder`` holds it already, resumed when it holds a partial run."""
    ldm = run.config.ldm
    config = attrs.evolve(run.config, syndiff=attrs.evolve(run.config.syndiff, training_steps=ldm.steps,
                                                           batch_size=ldm.batch_size))
    weights = folder / f"syndiff-{source}-{target}.safetensors"
    record_path = weights.with_suffix(".json")
    if weights.is_file() and record_path.is_file():
        return load_module(weights, build_syndiff(run.registry, source, target, config)).eval(), read_json(record_path)
    work = folder / f"syndiff-{source}-{target}"
    model, _, seconds, images = fit_syndiff(
        plan.graph, pair_datasets(plan.graph, source, target), source, target, run.registry, config, run.device,
        config.seed + 17, f"SynDiff {source}-{target} baseline", state=work / "state.safetensors",
        history=work / "history.jsonl", curves=work / "curves.png")
    save_syndiff(weights, model, f"baseline for {source}->{target}")
    record = {"steps": ldm.steps, "batch_size": ldm.batch_size, "images": images, "seconds": round(seconds, 1)}
    write_json(record_path, record)
    (work / "state.safetensors").unlink(missing_ok=True)
    return model.eval(), record


def format_comparison(rows: list[dict], source: str, target: str) -> str:
    """A Markdown table of the comparison rows."""
    clinical = [f for f in ("side", "region") if all(f"{f}_accuracy" in r["scores"] for r in rows)]
    headers = ["model", "PSNR", "SSIM", "MS-SSIM", "FID"] + [f"{f} correct [95% CI] (chance, truth)" for f in clinical] + [
        "s / image", "training"]
    lines = [f"{source} -> {target} on {rows[0]['subjects']} held-out subjects ({rows[0]['fid_features']}):", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        s = row["scores"]
        cells = [row["model"], f"{s['psnr']:.2f}", f"{s['ssim']:.3f}", f"{s['ms_ssim']:.3f}", f"{s.get('fid', float('nan')):.2f}"]
        cells += [f"{format_proportion(s, f + '_accuracy')} ({s[f + '_chance']:.2f}, "
                  f"{s.get(f + '_ceiling', float('nan')):.2f})" for f in clinical]
        seconds = row.get("seconds_per_image")
        cells += [f"{seconds:.3f}" if seconds is not None else "-", row["training"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
