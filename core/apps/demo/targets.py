"""The demo's own bar, checked in every run: does generation follow its condition at this budget?

Four numbers a reader (or a script) looks at first, each in ``metrics.json["targets"]`` under a
fixed key with its value, 95% Wilson interval, n, chance, the reader's score on the truth (where
the number is a reading of images), the target and whether it is met:

- ``text_to_ct_side``: a report's finding drawn on the stated side (at least 0.80);
- ``mri_to_ct_side``: an MRI's finding kept on its side in the CT (at least 0.80);
- ``mri_to_ct_psnr_gap``: MRI -> CT PSNR minus the pix2pix-style baseline's, in dB (at least -1);
- ``report_contradiction``: generated reports whose findings and impression disagree, pooled over
  every report task (at most 0.02).

and ``minutes``, the demo's wall time (at most 15). Where a task is missing from the run (another
graph), its key is absent rather than made up. The bar is the one the project set itself for the
demo (see ``docs/evaluation.md``); meeting it on two CPU cores is not yet possible, and the report
says so instead of hiding it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from medm2g.core.metrics.proportion import Proportion

DEMO_TARGETS = {
    "text_to_ct_side": ("at least", 0.80),
    "mri_to_ct_side": ("at least", 0.80),
    "mri_to_ct_psnr_gap": ("at least", -1.0),
    "report_contradiction": ("at most", 0.02),
    "minutes": ("at most", 15.0),
}
"""Key -> (direction, bound)."""

HEADLINE_IMAGE_TASKS = (("text", "ct"), ("mri", "ct"))
"""The image tasks the demo scores on its larger held-out set: a report's finding, and an MRI's anatomy."""


def _met(key: str, value: float) -> bool:
    direction, bound = DEMO_TARGETS[key]
    return value >= bound if direction == "at least" else value <= bound


def _target(key: str, value: float, **extra) -> dict:
    direction, bound = DEMO_TARGETS[key]
    return {"value": value, **extra, "target": f"{direction} {bound:g}", "met": _met(key, value)}


def _side(scores: Mapping[str, float], key: str) -> dict | None:
    if "side_accuracy" not in scores:
        return None
    return _target(key, scores["side_accuracy"], low=scores["side_accuracy_low"], high=scores["side_accuracy_high"],
                   n=int(scores["side_accuracy_n"]), chance=scores["side_chance"],
                   truth=scores.get("side_ceiling"))


def demo_targets(generation: Sequence[Mapping], baselines: Mapping[str, Sequence[Mapping]],
                 seconds: float) -> dict[str, dict]:
    """The targets from the evaluation's task rows (``metrics.json["generation"]``), the translation
    baselines (``"mri->ct"`` -> comparison rows) and the demo's total seconds."""
    tasks = {(row["source"], row["target"]): row["scores"] for row in generation
             if row.get("backend", "medm2g") == "medm2g"}  # the targets are MedM2G's; other backends sit beside
    found: dict[str, dict] = {}
    for (source, target), key in zip(HEADLINE_IMAGE_TASKS, ("text_to_ct_side", "mri_to_ct_side")):
        side = _side(tasks.get((source, target), {}), key)
        if side is not None:
            found[key] = side
    pix2pix = next((row for row in baselines.get("mri->ct", ()) if row["model"].startswith("pix2pix")), None)
    if ("mri", "ct") in tasks and pix2pix is not None:
        ours, theirs = tasks[("mri", "ct")]["psnr"], pix2pix["scores"]["psnr"]
        found["mri_to_ct_psnr_gap"] = _target("mri_to_ct_psnr_gap", ours - theirs, medm2g=ours, baseline=theirs,
                                              n=pix2pix["subjects"])
    counts = [(round(s["contradiction"] * s["contradiction_n"]), int(s["contradiction_n"]))
              for s in tasks.values() if "contradiction_n" in s]
    if counts:
        pooled = Proportion(sum(c for c, _ in counts), sum(n for _, n in counts))
        low, high = pooled.interval
        found["report_contradiction"] = _target("report_contradiction", pooled.value, low=low, high=high, n=pooled.n,
                                                tasks=len(counts))
    found["minutes"] = _target("minutes", seconds / 60)
    return found


def format_targets(targets: Mapping[str, Mapping]) -> str:
    """A Markdown table of the targets: value [interval] (chance, truth), n, target, met."""
    lines = ["| target | value [95% CI] | n | chance | reader on truth | bar | met |", "|---|---|---|---|---|---|---|"]
    for key, row in targets.items():
        value = f"{row['value']:.2f}" + (f" [{row['low']:.2f}, {row['high']:.2f}]" if "low" in row else "")
        if key == "mri_to_ct_psnr_gap":
            value += f" dB ({row['medm2g']:.2f} against {row['baseline']:.2f})"
        cells = [key, value, str(row.get("n", "-")),
                 f"{row['chance']:.2f}" if row.get("chance") is not None else "-",
                 f"{row['truth']:.2f}" if row.get("truth") is not None else "-", row["target"],
                 "yes" if row["met"] else "**no**"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
