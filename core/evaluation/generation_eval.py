"""Paired generation scores on held-out subjects: every ordered pair a run can do, against the truth.

For each held-out subject of the graph's ``evaluation`` manifest, each modality X the
run can condition on generates each other modality Y the run can generate, from X's
sample of that subject; the result is compared with Y's sample of the *same* subject:
PSNR, SSIM and MS-SSIM for images (model space, data range 2), BLEU-1..4 and ROUGE-L
for reports. Pairs never trained together (text to MRI) are scored like the others and
marked, which is the point of the paper's any-to-any claim.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import attrs
import torch

from medm2g.core.checkpoints import write_json
from medm2g.core.errors import ConfigError
from medm2g.core.evaluation.image_metrics import ms_ssim, psnr, ssim
from medm2g.core.evaluation.text_metrics import corpus_bleu, mean_rouge_l
from medm2g.core.generation.backends import CrossGuidedGenerator, GenerationRequest
from medm2g.core.generation.conditions import Condition
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.graph_engine import TrainingPlan
from medm2g.core.manifest import Manifest
from medm2g.core.paired_dataset import PairedDataset
from medm2g.core.phantom.report_findings import finding_agreement

IMAGE_METRICS = ("psnr", "ssim", "ms_ssim")
TEXT_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l")
FINDING_FIELDS = ("kind", "side", "region")
"""Clinical correctness of reports: accuracy of each with its chance level beside it."""
EXAMPLES = 3
"""Subjects shown per task in the picture."""


@attrs.frozen
class TaskScore:
    """Mean scores of one ordered pair over the held-out subjects, with a few examples kept for the picture."""

    source: str
    target: str
    trained_together: bool
    subjects: int
    scores: dict[str, float]
    examples: tuple = attrs.field(default=(), eq=False, repr=False)  # ((truth, generated), ...)


def held_out_subjects(manifest: Manifest, modalities: Sequence[str], registry, limit: int) -> list[dict]:
    """The first ``limit`` records having every one of ``modalities``, as model-space samples."""
    dataset = PairedDataset(manifest, list(modalities), registry, split=None)
    return [dataset[i] for i in range(min(limit, len(dataset)))]


def score_samples(generated: list, truth: list) -> dict[str, float]:
    """Image metrics for tensors; for reports, text overlap and (for reports in the phantom's
    vocabulary) whether the generated report names the truth's finding type, side and lobe."""
    if isinstance(truth[0], str):
        bleu = corpus_bleu(generated, truth)
        return {**{f"bleu_{n}": bleu[n] for n in range(1, 5)}, "rouge_l": mean_rouge_l(generated, truth),
                **finding_agreement(generated, truth)}
    prediction, target = torch.stack(generated).float(), torch.stack(truth).float()
    return {"psnr": float(psnr(prediction, target).mean()), "ssim": float(ssim(prediction, target).mean()),
            "ms_ssim": float(ms_ssim(prediction, target).mean())}


def evaluate_generation(run: TrainedRun, plan: TrainingPlan, manifest: Manifest, subjects: int = 16,
                        steps: int | None = None, seed: int = 0) -> list[TaskScore]:
    """Scores for every (condition, output) modality pair the run and the plan have, in sorted order."""
    if subjects < 1:
        raise ConfigError(f"eval: --subjects must be at least 1, got {subjects}")
    modalities = [m for m in plan.graph.modalities if m in manifest.modalities]
    records = held_out_subjects(manifest, modalities, run.registry, subjects)
    trained = {frozenset((edge.modality, edge.via)) for edge in plan.star}
    sources = [m for m in sorted(modalities) if m in run.conditionable()]
    targets = [m for m in sorted(modalities) if m in run.generatable()]
    generator = CrossGuidedGenerator(run)
    results = []
    for source in sources:
        conditions = [Condition(source, r[source], f"{source} {r['subject_id']}") for r in records]
        for target in targets:
            if target == source:
                continue
            request = GenerationRequest(outputs=[target], conditions=conditions, seed=seed, steps=steps, batch_size=16)
            generated = [sample.outputs[target] for sample in generator.generate(request)]
            truth = [r[target] for r in records]
            results.append(TaskScore(source, target, frozenset((source, target)) in trained, len(records),
                                     score_samples(generated, truth), tuple(zip(truth, generated))[:EXAMPLES]))
    return results


def format_generation_scores(rows: Sequence[TaskScore]) -> str:
    """Two Markdown tables: image targets, then report targets."""
    lines = []
    for title, metrics in (("images", IMAGE_METRICS), ("reports", TEXT_METRICS)):
        chosen = [r for r in rows if set(metrics) <= set(r.scores)]
        if not chosen:
            continue
        clinical = [f for f in FINDING_FIELDS if metrics is TEXT_METRICS and all(f"{f}_accuracy" in r.scores
                                                                                  for r in chosen)]
        headers = list(metrics) + [f"{f} correct (chance)" for f in clinical]
        lines += [f"{title}:", "", "| source -> target | trained together | n | " + " | ".join(headers) + " |",
                  "|" + "---|" * (3 + len(headers))]
        for row in chosen:
            cells = [f"{row.scores[m]:.2f}" if m == "psnr" else f"{row.scores[m]:.3f}" for m in metrics]
            cells += [f"{row.scores[f + '_accuracy']:.2f} ({row.scores[f + '_chance']:.2f})" for f in clinical]
            lines.append(f"| {row.source} -> {row.target} | {'yes' if row.trained_together else 'no'} | "
                         f"{row.subjects} | {' | '.join(cells)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def draw_generation_examples(rows: Sequence[TaskScore], registry, path: Path) -> Path:
    """One row per task: (truth, generated) for the first subjects, images in their display window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2 * max(len(r.examples) for r in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.7 * columns, 1.8 * len(rows)), squeeze=False, dpi=100)
    for i, row in enumerate(rows):
        low, high = registry[row.target].spec.intensity.display_range() if registry[row.target].spec.kind.is_imaging \
            else (-1, 1)
        for j, (truth, generated) in enumerate(row.examples):
            for k, (label, value) in enumerate((("truth", truth), ("generated", generated))):
                axis = axes[i, 2 * j + k]
                axis.set_xticks([])
                axis.set_yticks([])
                if isinstance(value, str):
                    axis.text(0.03, 0.97, "\n".join(textwrap.wrap(value, 26)[:9]), va="top", ha="left", fontsize=5,
                              transform=axis.transAxes)
                else:
                    axis.imshow(value[0].numpy(), cmap="gray", vmin=low, vmax=high)
                if i == 0:
                    axis.set_title(f"subject {j + 1} {label}", fontsize=7)
        axes[i, 0].set_ylabel(f"{row.source} -> {row.target}" + ("" if row.trained_together else "\n(never paired)"),
                              fontsize=7)
    figure.suptitle("held-out subjects: ground truth beside the sample generated from another modality", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / len(rows)))  # room for the title above the column names
    figure.savefig(path)
    plt.close(figure)
    return path


def write_generation_scores(rows: Sequence[TaskScore], registry, folder: Path, settings: dict) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"settings": settings,
              "tasks": [{"source": r.source, "target": r.target, "trained_together": r.trained_together,
                         "subjects": r.subjects, "scores": r.scores} for r in rows]}
    table = folder / "generation.md"
    table.write_text(format_generation_scores(rows), encoding="utf-8")
    return {"json": write_json(folder / "generation.json", record), "table": table,
            "picture": draw_generation_examples(rows, registry, folder / "generation.png")}
