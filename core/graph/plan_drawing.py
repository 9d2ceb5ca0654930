"""Draw a training plan as a picture: the alignment star and the stage-by-modality matrix.

People read the star and the rounds faster from a figure than from text, so
``medm2g plan --draw`` writes one. Matplotlib runs headless (Agg backend).
"""

from __future__ import annotations

import math
from pathlib import Path

from medm2g.core.graph.engine import StageKind, TrainingPlan
from medm2g.core.graph.plan_text import PART_ABBREVIATIONS

TRAIN_COLOUR = "#2e9d5b"
FROZEN_COLOUR = "#b8c2cc"
CENTER_COLOUR = "#f2a541"
NODE_COLOUR = "#5b8def"
TRANSLATION_COLOUR = "#8e5bd6"


def _layout(plan: TrainingPlan) -> dict[str, tuple[float, float]]:
    """Centre in the middle, each modality on the ring of its hop distance, near its parent; the
    modalities only translation edges reach on a ring outside the star."""
    positions = _star_layout(plan) if plan.center is not None else {}
    outside = [name for name in plan.graph.modalities if name not in positions]
    radius = max((edge.hops_to_center for edge in plan.star), default=0) + 1
    for index, name in enumerate(outside):
        angle = -math.pi / 2 + 2 * math.pi * (index + 0.5) / len(outside) / (1 if plan.center is None else 4)
        positions[name] = (radius * math.cos(angle), radius * math.sin(angle))
    return positions


def _star_layout(plan: TrainingPlan) -> dict[str, tuple[float, float]]:
    positions = {plan.center: (0.0, 0.0)}
    angles = {plan.center: 0.0}
    first_ring = [edge for edge in plan.star if edge.via == plan.center]
    for index, edge in enumerate(first_ring):
        angles[edge.modality] = math.pi / 2 - 2 * math.pi * index / max(len(first_ring), 1)
    children: dict[str, list[str]] = {}
    for edge in plan.star:
        if edge.via != plan.center:
            children.setdefault(edge.via, []).append(edge.modality)
    for edge in plan.star:  # star is in alignment order, so parents are placed before children
        if edge.via != plan.center:
            siblings = children[edge.via]
            spread = 0.5 / edge.hops_to_center
            angles[edge.modality] = angles[edge.via] + spread * (siblings.index(edge.modality) - (len(siblings) - 1) / 2)
        radius = edge.hops_to_center
        positions[edge.modality] = (radius * math.cos(angles[edge.modality]), radius * math.sin(angles[edge.modality]))
    return positions


def draw_plan(plan: TrainingPlan, path: Path | str) -> Path:
    """Write the plan picture (PNG, or any format matplotlib knows from the suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    path = Path(path)
    stages = [s for s in plan.stages if s.kind not in (StageKind.VAE, StageKind.LDM)]  # per-modality ones: no pair
    names = list(plan.graph.modalities)
    fig = plt.figure(figsize=(6 + 1.6 * len(names), max(5.0, 1.0 + 0.55 * len(stages))), dpi=120)
    star_ax = fig.add_axes([0.02, 0.06, 0.34, 0.72])
    grid_ax = fig.add_axes([0.48, 0.1, 0.5, 0.66])

    positions = _layout(plan)
    star_keys = {frozenset((e.modality, e.via)) for e in plan.star}
    for edge in plan.translation_edges:
        (x1, y1), (x2, y2) = positions[edge.a], positions[edge.b]
        star_ax.plot([x1, x2], [y1, y2], ls="-" if edge.paired else "--", color=TRANSLATION_COLOUR, lw=2, zorder=1)
        star_ax.text((x1 + x2) / 2, (y1 + y2) / 2, edge.backend, fontsize=8, ha="center", va="center", zorder=4,
                     color=TRANSLATION_COLOUR, bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none"))
    for edge in plan.graph.pairs:  # data the star does not use, drawn faintly under it
        if edge.key not in star_keys and not edge.is_translation:
            (x1, y1), (x2, y2) = positions[edge.a], positions[edge.b]
            star_ax.plot([x1, x2], [y1, y2], ls=":" if not edge.paired else "--", color="#999999", lw=1, zorder=1)
    for number, edge in enumerate(plan.star, 1):
        (x1, y1), (x2, y2) = positions[edge.via], positions[edge.modality]
        star_ax.plot([x1, x2], [y1, y2], color="#333333", lw=2.2, zorder=2)
        star_ax.text((x1 + x2) / 2, (y1 + y2) / 2, f" {number} ", fontsize=9, ha="center", va="center", zorder=4,
                     bbox=dict(boxstyle="circle", fc="white", ec="#333333"))
    for name, (x, y) in positions.items():
        colour = CENTER_COLOUR if name == plan.center else NODE_COLOUR
        star_ax.text(x, y, name, fontsize=11, ha="center", va="center", color="white", weight="bold", zorder=5,
                     bbox=dict(boxstyle="round,pad=0.5", fc=colour, ec="none"))
    reach = max(max(abs(c) for xy in positions.values() for c in xy), 0.4) + 0.6
    star_ax.set_xlim(-reach, reach)
    star_ax.set_ylim(-reach, reach)
    star_ax.set_aspect("equal")
    star_ax.axis("off")
    star_ax.set_title(
        f"Central-alignment star, centre {plan.center}\n"
        f"{plan.cost.alignment_edges} edges for {plan.cost.modalities} modalities (pairwise: "
        f"{plan.cost.pairwise_alignment_edges})\ncircled: alignment stage and round number"
        if plan.center is not None else "No alignment star: translation pairs only\n(solid: paired data, dashed: unpaired)",
        fontsize=9,
    )

    for row, stage in enumerate(stages):
        trains: dict[str, list[str]] = {}
        for group in stage.trains:  # a pair-owned group (SynDiff, spatial guidance) shows under both of its modalities
            for owner in stage.modalities if group.modality not in names else (group.modality,):
                trains.setdefault(owner, []).append(PART_ABBREVIATIONS[group.part])
        frozen = {g.modality for g in stage.frozen} - set(trains)
        for column, name in enumerate(names):
            if name in trains:
                colour, label = TRAIN_COLOUR, "train " + " ".join(trains[name])
            elif name in frozen or name in stage.modalities:
                colour, label = FROZEN_COLOUR, "frozen"
            else:
                continue
            grid_ax.add_patch(plt.Rectangle((column + 0.04, row + 0.08), 0.92, 0.84, fc=colour, ec="white"))
            grid_ax.text(column + 0.5, row + 0.5, label, ha="center", va="center", fontsize=8,
                         color="white" if colour == TRAIN_COLOUR else "#222222")
    labels = []
    for stage in stages:
        kind = {StageKind.ALIGNMENT: "align", StageKind.CROSS_GUIDED: "round"}.get(stage.kind, "translate")
        number = sum(1 for s in stages[: stages.index(stage) + 1] if s.kind == stage.kind)
        labels.append(f"{kind} {number}: {'-'.join(stage.modalities)}")
    grid_ax.set_xlim(0, len(names))
    grid_ax.set_ylim(len(stages), 0)
    grid_ax.set_xticks([i + 0.5 for i in range(len(names))], names)
    grid_ax.set_yticks([i + 0.5 for i in range(len(stages))], labels, fontsize=9)
    grid_ax.xaxis.tick_top()
    grid_ax.tick_params(length=0)
    for spine in grid_ax.spines.values():
        spine.set_visible(False)
    grid_ax.set_title("What each stage trains (C prompt encoder, V context encoder, f adaptation,\n"
                      "xattn cross-guidance sub-layer, spatial guidance of an imaging pair, SynDiff adversarial "
                      "diffusion)", fontsize=9, pad=24)
    grid_ax.legend(handles=[Patch(fc=TRAIN_COLOUR, label="trained"), Patch(fc=FROZEN_COLOUR, label="frozen")],
                   loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"medm2g plan: {plan.graph.name or plan.graph.source}", fontsize=12, y=0.98)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
