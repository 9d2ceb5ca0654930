"""``report.md``: what a demo did and how well, for a person to read first.

Written from the same numbers as ``metrics.json`` (never recomputed), with the
pictures linked relative to the report so the folder can be moved or zipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from medm2g.core.evaluation.generation_eval import format_generation_scores
from medm2g.core.evaluation.probes import format_ladder
from medm2g.core.graph.engine import TrainingPlan
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
        f"({settings['steps'] or 'the run config'} sampling steps, seed {settings['seed']}) and scores it against the "
        "same subject's target. Image metrics are in model space (data range 2); reports are scored by BLEU, "
        "ROUGE-L and whether they name the truth's finding (chance from the two sets' own frequencies).",
        "",
        format_generation_scores(evaluation.generation).rstrip(),
        "",
        f"![generation examples]({_link(pictures['generation'], path)})",
        "",
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
