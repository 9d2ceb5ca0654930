"""Does a report in other words put the finding on its side as often as the cohort's template does?

For each held-out subject with a lesion, the target image is generated twice with the same seed:
once from the subject's own report (the template the text model trained on), once from the same
finding written in words the cohort never uses (:mod:`medm2g.core.phantom.other_words`). The
image reader scores both for the stated side and lobe. A generator that follows the finding scores
the same on both (the bar: within 0.05); one that learned the template's wording loses the side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from medm2g.core.data.manifest import Manifest
from medm2g.core.evaluation.generation_eval import finding_readers, held_out_findings, held_out_subjects
from medm2g.core.generation.backends import CrossGuidedGenerator, GenerationRequest
from medm2g.core.generation.conditions import Condition
from medm2g.core.io.checkpoints import write_json
from medm2g.core.metrics.proportion import format_proportion
from medm2g.core.phantom.image_findings import image_finding_agreement
from medm2g.core.phantom.other_words import in_other_words
from medm2g.registry import ModalityKind

SIDE_BAR = 0.05
"""The most the side accuracy from reports in other words may fall below the template's."""


def other_words_scores(run, plan, manifest: Manifest, subjects: int, targets: Sequence[str], seed: int = 0,
                       steps: int | None = None) -> dict[str, dict]:
    """target -> {"template": scores, "other_words": scores, "side_difference", "within_bar", "examples"} for each
    imaging target the run generates from its text modality, on the first ``subjects`` held-out subjects
    (those with a lesion are scored)."""
    text = next((m for m in run.conditionable() if run.registry[m].spec.kind == ModalityKind.TEXT), None)
    if text is None:
        return {}
    wanted = [t for t in targets if t in run.generatable() and run.registry[t].spec.kind.is_imaging]
    readers = finding_readers(plan, run.registry, wanted)
    generator = CrossGuidedGenerator(run)
    results = {}
    for target in wanted:
        if target not in readers:
            continue  # no known findings to read against
        records = held_out_subjects(manifest, [text, target], run.registry, subjects)
        findings = held_out_findings(manifest, [r["subject_id"] for r in records], run.registry)
        lesioned = [i for i, f in enumerate(findings) if f is not None and not f.is_normal]
        if not lesioned:
            continue
        stated = [findings[i] for i in lesioned]
        reports = {"template": [records[i][text] for i in lesioned],
                   "other_words": [in_other_words(findings[i], i) for i in lesioned]}
        row: dict = {"examples": {name: texts[:3] for name, texts in reports.items()}}
        for name, texts in reports.items():
            conditions = [Condition(text, report, f"{name} {records[i]['subject_id']}")
                          for report, i in zip(texts, lesioned)]
            request = GenerationRequest(outputs=[target], conditions=conditions, seed=seed, steps=steps,
                                        batch_size=16)  # row i has seed + i in both: only the wording differs
            images = [sample.outputs[target] for sample in generator.generate(request)]
            row[name] = image_finding_agreement(readers[target], images, stated)
        difference = row["other_words"]["side_accuracy"] - row["template"]["side_accuracy"]
        row.update({"side_difference": difference, "within_bar": difference >= -SIDE_BAR})
        results[target] = row
    return results


def format_other_words(results: Mapping[str, Mapping]) -> str:
    lines = ["| text -> target | reports | n | side [95% CI] (chance) | lobe [95% CI] (chance) |",
             "|---|---|---|---|---|"]
    for target, row in results.items():
        for name in ("template", "other_words"):
            s = row[name]
            lines.append(f"| text -> {target} | {name.replace('_', ' ')} | {int(s['side_accuracy_n'])} | "
                         f"{format_proportion(s, 'side_accuracy')} ({s['side_chance']:.2f}) | "
                         f"{format_proportion(s, 'region_accuracy')} ({s['region_chance']:.2f}) |")
    verdicts = [f"text -> {t}: other words minus template, side {row['side_difference']:+.2f} "
                f"({'within' if row['within_bar'] else 'beyond'} the {SIDE_BAR:.2f} bar)" for t, row in results.items()]
    return "\n".join(lines) + "\n\n" + "; ".join(verdicts) + "\n"


def write_other_words(results: Mapping, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "other-words.md"
    table.write_text("# Reports in other words\n\n" + format_other_words(results), encoding="utf-8")
    return {"json": write_json(folder / "other-words.json", results), "table": table}
