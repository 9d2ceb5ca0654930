"""The classifier-free guidance scale of each task, chosen on validation subjects, never on test ones.

One scale does not suit every task: a report driving a CT needs a strong push for its finding to
show (scale 5 doubled text -> CT's lobe accuracy on the phantom, at a cost in PSNR), while MRI -> CT
hardly moves with the scale. ``medm2g tune-guidance RUN`` samples each task the run has paired
validation data for (the ``val`` split of the graph's training manifests) at every candidate scale,
scores the samples against the same subjects' truth, and writes the best scale per task to
``RUN/guidance.json``; ``generate`` and ``eval`` then use it unless a scale is given.

What "best" means, per target (ties go to the smaller scale, the more faithful sample):

- images: the finding read on the stated side and lobe (side + lobe accuracy) where the data have
  known findings (the phantom), else SSIM against the truth;
- reports: the finding named (type + side + lobe accuracy) where known, else BLEU-4.
"""

from __future__ import annotations

import logging
from typing import Sequence

from medm2g.core.data.manifest import Manifest
from medm2g.core.data.paired_dataset import PairedDataset
from medm2g.core.errors import ConfigError
from medm2g.core.evaluation.generation_eval import (
    finding_readers,
    held_out_findings,
    score_samples,
)
from medm2g.core.generation.backends import CrossGuidedGenerator, GenerationRequest
from medm2g.core.generation.conditions import Condition
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.io.checkpoints import write_json
from medm2g.core.training.data import training_manifests

logger = logging.getLogger("medm2g.eval")

DEFAULT_SCALES = (1.0, 2.0, 3.0, 5.0)
FINDING_OBJECTIVE = {"image": ("side_accuracy", "region_accuracy"),
                     "text": ("kind_accuracy", "side_accuracy", "region_accuracy")}
FIDELITY_OBJECTIVE = {"image": "ssim", "text": "bleu_4"}


def validation_pairs(manifests: Sequence[Manifest], source: str, target: str, registry,
                     limit: int) -> tuple[Manifest, list[dict]] | None:
    """Up to ``limit`` validation records holding both modalities, from the first manifest that has them."""
    for manifest in manifests:
        if manifest.having(source, target, split="val"):
            dataset = PairedDataset(manifest, [source, target], registry, split="val")
            return manifest, [dataset[i] for i in range(min(limit, len(dataset)))]
    return None


def objective(scores: dict[str, float], kind: str) -> tuple[str, float]:
    """(what was maximised, its value) for one scale's scores of a task whose target is ``kind``."""
    fields = [f for f in FINDING_OBJECTIVE[kind] if f in scores]
    if fields:
        return " + ".join(fields), sum(scores[f] for f in fields)
    name = FIDELITY_OBJECTIVE[kind]
    return name, scores[name]


def tune_guidance(run: TrainedRun, scales: Sequence[float] = DEFAULT_SCALES, subjects: int = 32,
                  steps: int | None = None, seed: int = 0,
                  only: Sequence[tuple[str, str]] | None = None) -> dict:
    """Choose each task's scale on validation subjects and write ``RUN/guidance.json``; returns its record.
    Tasks without validation pairs (never paired in training, or a manifest without a ``val`` split)
    keep the config's scale and are listed under ``skipped`` with the reason."""
    if not scales or any(s <= 0 for s in scales):
        raise ConfigError(f"tune-guidance: --scales must be positive numbers, got {list(scales)}")
    if subjects < 2:
        raise ConfigError(f"tune-guidance: --subjects must be at least 2, got {subjects}")
    plan = run.plan
    manifests = training_manifests(plan.graph, run.registry)
    tasks = [(s, t) for s in run.conditionable() for t in run.generatable() if s != t]
    if only is not None:
        unknown = [f"{s}:{t}" for s, t in only if (s, t) not in tasks]
        if unknown:
            raise ConfigError(f"tune-guidance: {', '.join(unknown)}: not a task of this run "
                              f"(tasks: {', '.join(f'{s}:{t}' for s, t in tasks)})")
        tasks = [task for task in tasks if task in set(map(tuple, only))]
    generator = CrossGuidedGenerator(run)
    readers = finding_readers(plan, run.registry, sorted({t for _, t in tasks}))
    chosen, skipped = {}, {}
    for source, target in tasks:
        found = validation_pairs(manifests, source, target, run.registry, subjects)
        if found is None or len(found[1]) < 2:
            skipped[f"{source}:{target}"] = "fewer than 2 validation subjects hold both (never paired, or no val split)"
            continue
        manifest, records = found
        findings = held_out_findings(manifest, [r["subject_id"] for r in records], run.registry)
        known = findings if any(f is not None for f in findings) else None
        truth = [r[target] for r in records]
        kind = "text" if isinstance(truth[0], str) else "image"
        conditions = [Condition(source, r[source], f"{source} {r['subject_id']}") for r in records]
        by_scale = {}
        for scale in sorted(scales):
            request = GenerationRequest(outputs=[target], conditions=conditions, seed=seed, steps=steps,
                                        guidance_scale=scale, batch_size=16)
            generated = [sample.outputs[target] for sample in generator.generate(request)]
            scores = score_samples(generated, truth, readers.get(target), known)
            name, value = objective(scores, kind)
            by_scale[f"{scale:g}"] = {"objective": value, **scores}
            logger.info("tune-guidance %s -> %s: scale %g, %s %.3f", source, target, scale, name, value)
        best = max(sorted(scales), key=lambda s: by_scale[f"{s:g}"]["objective"])  # first maximum: smaller scale
        chosen[f"{source}:{target}"] = {"scale": best, "objective": name, "subjects": len(records),
                                        "manifest": str(manifest.path), "by_scale": by_scale}
    record = {"settings": {"scales": sorted(scales), "subjects": subjects, "steps": steps, "seed": seed,
                           "split": "val", "default_scale": run.config.diffusion.guidance_scale},
              "tasks": chosen, "skipped": skipped}
    write_json(run.layout.tuned_guidance, record)
    return record


def format_tuned_guidance(record: dict) -> str:
    """A Markdown table: task, chosen scale, the objective at each scale."""
    scales = [f"{s:g}" for s in record["settings"]["scales"]]
    lines = ["| task | chosen | objective | n | " + " | ".join(f"scale {s}" for s in scales) + " |",
             "|---|---|---|---|" + "---|" * len(scales)]
    for task, row in record["tasks"].items():
        cells = [f"{row['by_scale'][s]['objective']:.3f}" for s in scales]
        lines.append(f"| {task} | {row['scale']:g} | {row['objective']} | {row['subjects']} | " + " | ".join(cells) + " |")
    for task, why in record["skipped"].items():
        lines.append(f"| {task} | config's {record['settings']['default_scale']:g} | {why} | 0 |" + " - |" * len(scales))
    return "\n".join(lines) + "\n"
