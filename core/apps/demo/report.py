"""``report.md``: what a demo did and how well, for a person to read first.

Written from the same numbers as ``metrics.json`` (never recomputed), with the
pictures linked relative to the report so the folder can be moved or zipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from medm2g.core.apps.baselines.comparison import format_comparison
from medm2g.core.apps.demo.targets import format_targets
from medm2g.core.evaluation.generation_eval import format_generation_scores
from medm2g.core.evaluation.probes import format_ladder
from medm2g.core.graph.engine import TrainingPlan
from medm2g.core.metrics.proportion import format_proportion
from medm2g.core.metrics.retrieval import format_retrieval


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def _link(path: str, report: Path) -> str:
    return os.path.relpath(path, report.parent).replace(os.sep, "/")


def _stage_table(stages: list[dict]) -> list[str]:
    lines = ["| stage | steps | seconds | final loss |", "|---|---|---|---|"]
    for stage in stages:
        loss = stage["final"].get("loss")
        shown = f"{loss:.4f}" if isinstance(loss, (int, float)) else "-"
        seconds = stage["seconds"]
        lines.append(f"| {stage['stage']} | {stage['steps']} | "
                     f"{seconds:.0f}{' (earlier session)' if stage['resumed_complete'] else ''} | {shown} |")
    return lines


def _ladder_section(ladder: dict | None) -> list[str]:
    """"Where the finding is lost": each rung's reading of the stated finding, condition to image."""
    if not ladder:
        return []
    return ["## Where the finding is lost", "",
            "Rung 1 probes each frozen condition embedding C_M with a linear classifier fitted on training subjects; "
            "rung 2 reads the finding on held-out truth images and on their VAE reconstructions; rung 3 on images of "
            "an LDM conditioned on the finding itself for the same steps (the ceiling at this budget); rung 4 on "
            "generated images. A rung far below the one before it is where the finding is lost. Accuracy [95% Wilson interval] "
            "(chance).", "", format_ladder(ladder).rstrip(), ""]


def _targets_section(targets: dict) -> list[str]:
    """The demo's bar first: what a reader wants to know before any table."""
    if not targets:
        return []
    missed = [key for key, row in targets.items() if not row["met"]]
    verdict = ("Every target is met." if not missed else
               f"{len(missed)} of {len(targets)} targets are not met at this budget ({', '.join(missed)}); "
               "the finding ladder below says where the finding is lost.")
    return ["## Targets", "",
            "Does generation follow its condition? Side readings are accuracies on held-out subjects with a lesion, "
            "with their 95% Wilson interval, chance, and the same image reader on the truth images (its ceiling). "
            f"{verdict} Keys and definitions: `metrics.json[\"targets\"]`, documented in `docs/evaluation.md`.", "",
            format_targets(targets).rstrip(), ""]


def _baselines_section(baselines: dict) -> list[str]:
    lines = []
    for task, rows in baselines.items():
        source, target = task.split("->")
        lines += [f"## {source} -> {target} beside its baselines", "",
                  "The same held-out subjects: medm2g as evaluated above"
                  + "".join(f", {row['model']} (the run's own {row['model']} edge)" for row in rows
                            if row.get("run_edge"))
                  + ", a pix2pix-style L1 UNet trained on the "
                  f"same pairs for the {target} LDM's steps and batch, and the {target} LDM with no condition (what the "
                  "condition adds).", "", format_comparison(rows, source, target).rstrip(), ""]
    return lines


def _vq_ar_section(measured: dict | None, pictures: dict, path: Path) -> list[str]:
    """The third seed system's own measurements: its codebook, and where its alignment puts a lesion term."""
    if not measured:
        return []
    lines = ["## vq-ar: anatomy-pathology prompts, codebook and word-patch alignment", "",
             "The report -> image row marked vq-ar above is the third seed paper's system: each report becomes a prompt "
             "in the head vocabulary's terms, a VQ-GAN codebook turns images into tokens, a word-patch alignment "
             "picks each prompt term's key patches, and a GPT-2-style transformer writes the image's tokens. Below: "
             "its codebook on held-out images, and whether the patch the alignment ranks first for the report's "
             "lesion term lies inside that subject's lesion mask, on the subject's own image and as the first key "
             "patch chosen from the prompt alone (what the transformer is given); chance is the mask's share of the "
             "patches where lesions occur.", ""]
    for task, result in measured.items():
        codebook, hits = result["codebook"], result["alignment"]
        lines += [f"- {task}: codebook L1 {codebook['l1']:.3f} (PSNR {codebook['psnr']:.1f} dB), "
                  f"{codebook['codes_used']:.0%} of the codes used (perplexity {codebook['perplexity']:.0f}); "
                  f"lesion term's top patch in the lesion: on the image {format_proportion(hits, 'hit_on_image')}, "
                  f"as the first key patch {format_proportion(hits, 'hit_as_key')}, chance {hits['chance']:.2f}; "
                  f"on the lesion's mirror place instead {format_proportion(hits, 'mirror_hit_on_image')} "
                  f"(n {hits['hit_on_image_n']})"]
    lines.append("")
    for name, picture in pictures.items():
        if name.startswith("vq_ar_heat_maps"):
            lines += [f"![word-patch heat maps]({_link(picture, path)})", ""]
    return lines


def write_report(path: Path, metrics: dict, plan: TrainingPlan, evaluation) -> Path:
    """The report: headline, plan, training, retrieval, generation scores, samples, reproduction."""
    seconds = metrics["seconds"]
    settings = metrics["evaluation_settings"]
    pictures = metrics["pictures"]
    phases = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items() if name != "total")
    never = [r for r in evaluation.retrieval if not r.trained_together]
    lines = [
        "# medm2g demo report",
        "",
        f"The whole MedM2G plan of `{Path(plan.graph.source).name}` ({len(plan.graph.modalities)} modalities, centre "
        f"`{plan.center}`) trained on the data under `data/` and evaluated on held-out subjects, in "
        f"**{_minutes(seconds['total'])}** ({phases}).",
        "",
        "Every number below is in `metrics.json`; every sample's seed and command in its folder's `generation.json`.",
        "",
        *_targets_section(metrics.get("targets", {})),
        "## The plan",
        "",
        f"{plan.cost.alignment_edges} alignment edges for {plan.cost.modalities} modalities (all pairs would need "
        f"{plan.cost.pairwise_alignment_edges}); {plan.cost.rounds} multi-flow rounds; "
        f"{plan.cost.task_pairs_without_paired_data} of {plan.cost.task_pairs_enabled} generation pairs "
        "had no paired data and work through the shared space.",
        "",
        f"![plan]({_link(pictures['plan'], path)})",
        "",
        "## Training",
        "",
        *_stage_table(metrics["stages"]),
        "",
        f"![loss curves]({_link(pictures['curves'], path)})",
        "",
        "## Cross-modal retrieval (alignment)",
        "",
        f"Recall@k of the same subject among {evaluation.retrieval[0].subjects} held-out subjects, chance in brackets. "
        f"{len(never)} of {len(evaluation.retrieval)} ordered pairs were never trained together "
        "and are aligned only through the centre.",
        "",
        format_retrieval(evaluation.retrieval),
        "",
        f"![retrieval]({_link(pictures['retrieval'], path)})",
        "",
        "## Generation against the held-out truth",
        "",
        f"Each task generates the target from the source modality of {settings['subjects']} held-out subjects "
        + (f"({', '.join(sorted(settings['task_subjects']))}: {max(settings['task_subjects'].values())}) "
           if settings.get("task_subjects") else "") +
        f"({settings['steps'] or 'the run config'} sampling steps, seed {settings['seed']}) and scores it against the "
        "same subject's target. Image metrics are in model space (data range 2); reports are scored by BLEU, "
        "ROUGE-L and whether they name the truth's finding (chance from the two sets' own frequencies).",
        "",
        format_generation_scores(evaluation.generation).rstrip(),
        "",
        f"![generation examples]({_link(pictures['generation'], path)})",
        "",
        *_baselines_section(metrics.get("translation_baselines", {})),
        *_vq_ar_section(metrics.get("vq_ar"), pictures, path),
        *_ladder_section(evaluation.ladder),
        "## Samples of every task",
        "",
    ]
    for sample in metrics["samples"]:
        paired = "" if sample["trained_together"] else " (never trained together)"
        lines += [f"### {sample['task']}{paired}", "", f"![{sample['task']}]({_link(sample['grid'], path)})", ""]
        lines += [f"> {report}" for report in sample["reports"][:2]]
        if sample["reports"]:
            lines.append("")
    lines += [
        "## Reproduce",
        "",
        "```bash",
        metrics["command"],
        "```",
        "",
        f"Seed {metrics['seed']}; the full run config is in `config.yaml` and `metrics.json`. Run the same command "
        "into the same folder to resume, or `medm2g eval` / `medm2g generate` on this folder for more.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
