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
from typing import Mapping, Sequence

import attrs
import torch

from medm2g.core.data.manifest import Manifest
from medm2g.core.data.paired_dataset import PairedDataset
from medm2g.core.errors import ConfigError
from medm2g.core.generation.backends import GenerationRequest, generation_backend
from medm2g.core.generation.conditions import Condition
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.graph.engine import TrainingPlan
from medm2g.core.io.checkpoints import write_json
from medm2g.core.metrics.coco_caption import COCO_METRICS, INSTALL_HINT, coco_available, coco_caption_scores
from medm2g.core.metrics.fid import FeatureNetwork, features, frechet_distance, timm_feature_network
from medm2g.core.metrics.image import ms_ssim, psnr, ssim
from medm2g.core.metrics.proportion import format_proportion
from medm2g.core.metrics.text import corpus_bleu, mean_rouge_l
from medm2g.core.phantom.image_findings import ImageFindingReader, fit_reader, image_finding_agreement, subject_finding
from medm2g.core.phantom.report_findings import contradiction_scores, finding_agreement
from medm2g.core.training.data import training_manifests

IMAGE_METRICS = ("psnr", "ssim", "ms_ssim", "fid")
TEXT_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l")
FINDING_FIELDS = ("kind", "side", "region")
"""Clinical correctness of reports: accuracy of each with its chance level beside it."""
IMAGE_FINDING_FIELDS = ("side", "region")
"""Clinical correctness of images: does the image show the stated finding there (with chance, and
the reader's own accuracy on the truth images, the ceiling)."""
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
    fid_features: str | None = None  # what the "fid" score was computed on: never Inception unless it says so
    backend: str = "medm2g"


def held_out_subjects(manifest: Manifest, modalities: Sequence[str], registry, limit: int) -> list[dict]:
    """The first ``limit`` records having every one of ``modalities``, as model-space samples."""
    dataset = PairedDataset(manifest, list(modalities), registry, split=None)
    return [dataset[i] for i in range(min(limit, len(dataset)))]


def held_out_findings(manifest: Manifest, subject_ids: Sequence[str], registry) -> list:
    """The phantom's ground-truth finding of each subject (None where the data are not a phantom cohort),
    found beside any of the subject's image files."""
    found = {}
    for record in manifest.records:
        for modality, value in record.values.items():
            if record.subject_id not in found and value and registry[modality].spec.kind.is_imaging:
                finding = subject_finding(manifest.resolve(value))
                if finding is not None:
                    found[record.subject_id] = finding
    return [found.get(subject) for subject in subject_ids]


def score_samples(generated: list, truth: list, reader: ImageFindingReader | None = None,
                  findings: Sequence | None = None, feature_network: FeatureNetwork | None = None) -> dict[str, float]:
    """Image metrics for tensors; for reports, text overlap and (for reports in the phantom's
    vocabulary) whether the generated report names the truth's finding type, side and lobe.
    With a ``reader`` and the subjects' ``findings``, images are also read for the stated finding's
    side and lobe (``*_accuracy``, ``*_chance``, and ``*_ceiling``: the reader on the truth images).
    With a ``feature_network``, ``fid`` is the Fréchet distance of its features (see :mod:`.fid`)."""
    if isinstance(truth[0], str):
        bleu = corpus_bleu(generated, truth)
        return {**{f"bleu_{n}": bleu[n] for n in range(1, 5)}, "rouge_l": mean_rouge_l(generated, truth),
                **(coco_caption_scores(generated, truth) if coco_available() else {}),
                **finding_agreement(generated, truth), **contradiction_scores(generated)}
    prediction, target = torch.stack(generated).float(), torch.stack(truth).float()
    scores = {"psnr": float(psnr(prediction, target).mean()), "ssim": float(ssim(prediction, target).mean()),
              "ms_ssim": float(ms_ssim(prediction, target).mean())}
    if feature_network is not None and len(truth) >= 2:
        device = next(iter(feature_network.parameters()), torch.empty(0)).device
        scores["fid"] = frechet_distance(features(feature_network, truth, device),
                                         features(feature_network, generated, device))
    if reader is not None and findings is not None:
        clinical = image_finding_agreement(reader, generated, findings)
        ceiling = image_finding_agreement(reader, truth, findings)
        scores.update(clinical)
        scores.update({f"{field}_ceiling": ceiling[f"{field}_accuracy"] for field in IMAGE_FINDING_FIELDS
                       if f"{field}_accuracy" in ceiling})
    return scores


def finding_readers(plan: TrainingPlan, registry, targets: Sequence[str]) -> dict[str, ImageFindingReader]:
    """A finding reader per imaging target, fitted on the graph's training manifests, where the data
    are a phantom cohort (elsewhere there is no ground truth to read against, and no reader); each is
    fitted once per process (:func:`fit_reader` keeps them)."""
    manifests = training_manifests(plan.graph, registry)
    readers = {}
    for target in targets:
        if registry[target].spec.kind.is_imaging and (reader := fit_reader(manifests, target, registry)) is not None:
            readers[target] = reader
    return readers


def fid_network(run: TrainedRun, target: str, spec: str | None) -> tuple[FeatureNetwork, str]:
    """The feature network FID of ``target`` images is computed on, and its label: the run's aligned
    encoder C_target, unless ``spec`` names another run's (``run:PATH``: one yardstick for several
    runs, as an ablation needs) or a timm network with local weights (``timm:ARCH:FILE``)."""
    if spec is None:
        return run.encoder(target), f"FID[medm2g C_{target}]"
    if spec.startswith("run:"):
        other = TrainedRun.open(spec[len("run:"):], run.registry, device=str(run.device))
        return other.encoder(target), f"FID[medm2g C_{target} of {other.layout.root.name}]"
    network, label = timm_feature_network(spec, run.registry[target].spec.channels)
    return network.to(run.device), label


def evaluate_generation(run: TrainedRun, plan: TrainingPlan, manifest: Manifest, subjects: int = 16,
                        steps: int | None = None, seed: int = 0, fid_features: str | None = None,
                        cross_guided: bool = True, only: Sequence[tuple[str, str]] | None = None,
                        task_subjects: Mapping[tuple[str, str], int] | None = None) -> list[TaskScore]:
    """Scores for every (condition, output) modality pair the run and the plan have, in sorted order,
    then every direction of the run's translation edges (SynDiff, or another backend's), each by its own backend.
    ``fid_features``: the FID feature network (:func:`fid_network`); each task's label is in its scores' row.
    ``cross_guided=False`` conditions on prompt embeddings alone even where the run has round parts.
    ``only``: just these (source, target) tasks (one task at 100 subjects is a minute, all twelve twelve);
    one the run cannot do is an error naming those it can. ``task_subjects``: more (or fewer) subjects for
    some (source, target) tasks than ``subjects``, as the demo scores its headline tasks on 100 and
    the rest on 16 (every task uses the first subjects of the same list)."""
    task_subjects = dict(task_subjects or {})
    if subjects < 1 or any(n < 1 for n in task_subjects.values()):
        raise ConfigError(f"eval: --subjects must be at least 1, got {min([subjects, *task_subjects.values()])}")
    modalities = [m for m in plan.graph.modalities if m in manifest.modalities]
    records = held_out_subjects(manifest, modalities, run.registry, max([subjects, *task_subjects.values()]))
    trained = {frozenset((edge.modality, edge.via)) for edge in plan.star}
    sources = [m for m in sorted(modalities) if m in run.conditionable()]
    targets = [m for m in sorted(modalities) if m in run.generatable()]
    tasks = [(source, target, "medm2g") for source in sources for target in targets if source != target]
    tasks += [(source, target, backend) for source, target, backend in run.translation_tasks()
              if source in modalities and target in modalities]
    if only is not None:
        possible = {(source, target) for source, target, _ in tasks}
        unknown = [f"{s}:{t}" for s, t in only if (s, t) not in possible]
        if unknown:
            raise ConfigError(f"eval: {', '.join(unknown)}: not a task of this run and manifest (tasks: "
                              f"{', '.join(sorted(f'{s}:{t}' for s, t in possible))})")
        tasks = [task for task in tasks if task[:2] in set(map(tuple, only))]
    backends = {name: generation_backend(name, run) for name in {backend for _, _, backend in tasks}}
    imaging_targets = sorted({t for _, t, _ in tasks if run.registry[t].spec.kind.is_imaging})
    readers = finding_readers(plan, run.registry, imaging_targets)
    networks = {t: fid_network(run, t, fid_features) for t in imaging_targets  # a SynDiff-only run has no C_t
                if fid_features is not None or t in run.conditionable()}
    findings = held_out_findings(manifest, [r["subject_id"] for r in records], run.registry)
    results = []
    for source, target, backend in tasks:
        chosen = records[:task_subjects.get((source, target), subjects)]
        conditions = [Condition(source, r[source], f"{source} {r['subject_id']}") for r in chosen]
        request = GenerationRequest(outputs=[target], conditions=conditions, seed=seed, batch_size=16,
                                    steps=steps if backend == "medm2g" else None, cross_guided=cross_guided)
        generated = [sample.outputs[target] for sample in backends[backend].generate(request)]
        truth = [r[target] for r in chosen]
        network, label = networks.get(target, (None, None))
        scores = score_samples(generated, truth, readers.get(target), findings[:len(chosen)], network)
        together = backend != "medm2g" or frozenset((source, target)) in trained
        results.append(TaskScore(source, target, together, len(chosen), scores,
                                 tuple(zip(truth, generated))[:EXAMPLES], fid_features=label, backend=backend))
    return results


def _coco_table(rows: Sequence[TaskScore]) -> list[str]:
    """The reports as the COCO caption evaluation scores them, comparable with published tables."""
    if not all(all(m in r.scores for m in COCO_METRICS) for r in rows):
        return [f"reports as published tables score them (BLEU, ROUGE-L, CIDEr of the COCO caption evaluation): "
                f"{INSTALL_HINT}", ""]
    lines = ["reports as the COCO caption evaluation scores them (pycocoevalcap on medm2g's tokens; BLEU as above, "
             "ROUGE-L with beta 1.2, CIDEr-D against these references only):", "",
             "| source -> target | n | " + " | ".join(m.removeprefix("coco_") for m in COCO_METRICS) + " |",
             "|" + "---|" * (2 + len(COCO_METRICS))]
    for row in rows:
        lines.append(f"| {row.source} -> {row.target} | {row.subjects} | "
                     + " | ".join(f"{row.scores[m]:.3f}" for m in COCO_METRICS) + " |")
    return lines + [""]


def format_generation_scores(rows: Sequence[TaskScore]) -> str:
    """Two Markdown tables: image targets, then report targets."""
    if not rows:
        return ("no generation task: the graph pairs no modalities (single-modality data train a VAE and an LDM; "
                "`medm2g generate RUN --to MODALITY` samples them unconditionally)\n")
    lines = []
    for title, all_metrics in (("images", IMAGE_METRICS), ("reports", TEXT_METRICS)):
        chosen = [r for r in rows if all_metrics[0] in r.scores]
        if not chosen:
            continue
        metrics = [m for m in all_metrics if all(m in r.scores for r in chosen)]
        fields = FINDING_FIELDS if all_metrics is TEXT_METRICS else IMAGE_FINDING_FIELDS
        clinical = [f for f in fields if all(f"{f}_accuracy" in r.scores for r in chosen)]
        contradictions = all_metrics is TEXT_METRICS and all("contradiction" in r.scores for r in chosen)
        headers = metrics + [f"{f} correct [95% CI] (chance{'' if all_metrics is TEXT_METRICS else ', truth'})"
                             for f in clinical] + (["findings contradict impression [95% CI]"] if contradictions else [])
        show_backend = any(r.backend != "medm2g" for r in chosen)
        lines += [f"{title}:", "", "| source -> target | " + ("backend | " if show_backend else "")
                  + "trained together | n | " + " | ".join(headers) + " |",
                  "|" + "---|" * (3 + show_backend + len(headers))]
        for row in chosen:
            cells = [f"{row.scores[m]:.2f}" if m in ("psnr", "fid") else f"{row.scores[m]:.3f}" for m in metrics]
            cells += [f"{format_proportion(row.scores, f + '_accuracy')} ({row.scores[f + '_chance']:.2f}"
                      + (f", {row.scores[f + '_ceiling']:.2f})" if f + "_ceiling" in row.scores else ")")
                      for f in clinical]
            cells += [format_proportion(row.scores, "contradiction")] if contradictions else []
            backend = f"{row.backend} | " if show_backend else ""
            lines.append(f"| {row.source} -> {row.target} | {backend}{'yes' if row.trained_together else 'no'} | "
                         f"{row.subjects} | {' | '.join(cells)} |")
        lines.append("")
        if all_metrics is TEXT_METRICS:
            lines += _coco_table(chosen)
        labels = sorted({r.fid_features for r in chosen if r.fid_features and "fid" in metrics})
        if labels:
            lines += [f"fid: Fréchet distance on features of {', '.join(labels)}; not Inception FID, and "
                      "biased upwards for few subjects: compare only rows with the same features and n.", ""]
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
        axes[i, 0].set_ylabel(f"{row.source} -> {row.target}" + ("" if row.trained_together else "\n(never paired)")
                              + ("" if row.backend == "medm2g" else f"\n({row.backend})"), fontsize=7)
    figure.suptitle("held-out subjects: ground truth beside the sample generated from another modality", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / len(rows)))  # room for the title above the column names
    figure.savefig(path)
    plt.close(figure)
    return path


def write_generation_scores(rows: Sequence[TaskScore], registry, folder: Path, settings: dict) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"settings": settings,
              "tasks": [{"source": r.source, "target": r.target, "backend": r.backend,
                         "trained_together": r.trained_together,
                         "subjects": r.subjects, "scores": r.scores, "fid_features": r.fid_features} for r in rows]}
    table = folder / "generation.md"
    table.write_text(format_generation_scores(rows), encoding="utf-8")
    written = {"json": write_json(folder / "generation.json", record), "table": table}
    if rows:  # a graph of one modality's data has no task to picture
        written["picture"] = draw_generation_examples(rows, registry, folder / "generation.png")
    return written
