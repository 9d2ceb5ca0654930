"""The ablation table: one row per CA/LCAG/VI combination (and the full method reading prompts), the columns the paper's table 7 reports
in spirit (a report task, an image task's fidelity, translation, alignment) plus training time and
parameters, and the translation baselines beneath. Written as JSON, Markdown and a picture.
"""

from __future__ import annotations

from pathlib import Path

from medm2g.core.apps.baselines.comparison import format_comparison
from medm2g.core.io.checkpoints import write_json
from medm2g.core.metrics.retrieval import retrieval_to_dict

COLUMNS = (
    ("text", "xray", "ssim", "text->xray SSIM"),
    ("text", "xray", "fid", "text->xray FID"),
    ("text", "ct", "side_accuracy", "text->ct side"),
    ("text", "mri", "ssim", "text->mri SSIM (never paired)"),
    ("mri", "ct", "psnr", "mri->ct PSNR"),
    ("mri", "ct", "ssim", "mri->ct SSIM"),
    ("xray", "text", "bleu_4", "xray->text BLEU-4"),
    ("xray", "text", "kind_accuracy", "xray->text finding"),
)
"""(source, target, score, header): tasks of the paper's graph; columns a graph lacks are left out."""


def _recall(rows, trained: bool, k: int = 5) -> float | None:
    chosen = [r.recall[k] / r.chance[k] for r in rows if r.trained_together == trained]
    return sum(chosen) / len(chosen) if chosen else None


def _cells(row: dict, columns) -> dict[str, float | None]:
    scores = {(t.source, t.target): t.scores for t in row["generation"]}
    values = {header: scores.get((source, target), {}).get(metric) for source, target, metric, header in columns}
    values["retrieval R@5 / chance, trained pairs"] = _recall(row["retrieval"], True)
    values["retrieval R@5 / chance, never paired"] = _recall(row["retrieval"], False)
    return values


def format_ablation(rows: list[dict]) -> str:
    columns = [c for c in COLUMNS if any((c[0], c[1]) in {(t.source, t.target) for t in r["generation"]} for r in rows)]
    values = [_cells(row, columns) for row in rows]
    headers = list(values[0])
    lines = ["| CA | LCAG | VI | prompts | " + " | ".join(headers) + " | training s | parameters (added) |",
             "|" + "---|" * (4 + len(headers) + 2)]
    for row, cells in zip(rows, values):
        flags = row["row"]
        marks = " | ".join("yes" if on else "-" for on in (flags.central_alignment, flags.cross_guided,
                                                           flags.visual_invariant, flags.prompts))
        shown = " | ".join("-" if v is None else (f"{v:.2f}" if abs(v) >= 10 or "psnr" in h.lower() or "FID" in h
                                                  else f"{v:.3f}") for h, v in cells.items())
        lines.append(f"| {marks} | {shown} | {row['seconds']:.0f} | "
                     f"{row['parameters'] / 1e6:.2f}M (+{row['added_parameters'] / 1e6:.2f}M) |")
    return "\n".join(lines) + "\n"


def draw_ablation(rows: list[dict], path: Path) -> Path:
    """One bar chart per column, rows in table order, so each component's effect shows at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in COLUMNS if any((c[0], c[1]) in {(t.source, t.target) for t in r["generation"]} for r in rows)]
    values = [_cells(row, columns) for row in rows]
    headers = [h for h in values[0] if any(v[h] is not None for v in values)]
    labels = [row["row"].label for row in rows]
    figure, axes = plt.subplots(1, len(headers), figsize=(2.4 * len(headers), 3.6), squeeze=False)
    for axis, header in zip(axes[0], headers):
        heights = [v[header] if v[header] is not None else 0.0 for v in values]
        colours = ["#2e6fd8" if row["row"].cross_guided else "#9bb7e8" for row in rows]
        axis.barh(range(len(rows)), heights, color=colours)
        axis.set_yticks(range(len(rows)))
        axis.set_yticklabels(labels if axis is axes[0][0] else [], fontsize=6)
        axis.invert_yaxis()
        axis.set_title(header, fontsize=7)
        axis.tick_params(axis="x", labelsize=6)
    figure.suptitle("ablation: central alignment (CA), latent cross-guided generation (LCAG), visual invariant (VI), "
                    "prompts",
                    fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_ablation(out: Path, rows: list[dict], comparison: list[dict], translation, settings: dict) -> dict:
    record = {
        "settings": settings,
        "rows": [{"central_alignment": r["row"].central_alignment, "cross_guided": r["row"].cross_guided,
                  "visual_invariant": r["row"].visual_invariant, "prompts": r["row"].prompts, "run": r["run"],
                  "seconds": r["seconds"],
                  "parameters": r["parameters"], "added_parameters": r["added_parameters"],
                  "retrieval": retrieval_to_dict(r["retrieval"]),
                  "generation": [{"source": t.source, "target": t.target, "trained_together": t.trained_together,
                                  "subjects": t.subjects, "scores": t.scores, "fid_features": t.fid_features}
                                 for t in r["generation"]]} for r in rows],
        "translation": comparison,
    }
    write_json(out / "ablation.json", record)
    text = ["# medm2g ablation", "",
            f"Command: `{settings['command']}` (seed {settings['seed']}); {settings['subjects']} held-out subjects per "
            f"task; VAEs trained once ({settings['vae_seconds_shared']:.0f} s) and shared by every row; "
            f"{settings['seconds_total'] / 60:.1f} min in all.", "",
            "Training seconds are the alignment, LDM and (LCAG rows) round stages of the row; parameters are "
            "everything generation uses, with what the rounds add in brackets (CA and VI are losses: they add "
            "none). FID is on the full method's (first row's run) aligned C_M features for every row, not Inception. `finding` and `side` are "
            "clinical correctness (the phantom's truth). The `prompts` rows are the full method with the report "
            "encoder reading each report's anatomy-pathology prompt instead of the report.", "",
            format_ablation(rows)]
    if comparison:
        source, target = translation
        text += ["## Translation baselines", "", format_comparison(comparison, source, target)]
    text += ["![ablation](ablation.png)", ""]
    (out / "ablation.md").write_text("\n".join(text), encoding="utf-8")
    draw_ablation(rows, out / "ablation.png")
    return record
