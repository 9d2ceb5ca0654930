"""The training plan as text for people and as JSON for machines."""

from __future__ import annotations

from typing import Any

import cattrs

from medm2g.core.errors import GraphError
from medm2g.core.graph.engine import MEDM2G_STAGE_KINDS, ParamGroup, Part, Stage, StageKind, TrainingPlan, stage_kind
from medm2g.core.graph.pair_graph import PairGraph, structure_pair_graph

_JSON = cattrs.Converter()
_JSON.register_unstructure_hook(ParamGroup, str)
_JSON.register_unstructure_hook(frozenset, sorted)


def plan_to_dict(plan: TrainingPlan) -> dict[str, Any]:
    """A JSON-ready dict of the whole plan; parameter groups are written as ``modality.part``."""
    data = _JSON.unstructure(plan)
    data["graph"].pop("source", None)
    data["source"] = plan.graph.source
    return data


def plan_from_dict(data: dict[str, Any], source: str = "plan.json") -> TrainingPlan:
    """The plan :func:`plan_to_dict` wrote, rebuilt exactly: a trained run is read back from its own
    ``plan.json``, never from a graph file that may have moved or changed since."""
    try:
        graph = structure_pair_graph(data["graph"], data.get("source", "<memory>"))
        converter = cattrs.Converter()
        converter.register_structure_hook(ParamGroup, lambda value, _t: _param_group(value))
        converter.register_structure_hook(PairGraph, lambda _value, _t: graph)
        converter.register_structure_hook(StageKind, lambda value, _t: stage_kind(value))  # other backends' kinds
        return converter.structure(data, TrainingPlan)
    except GraphError as error:
        raise GraphError(f"{source}: not a plan medm2g wrote (its graph: {str(error)[:200]})") from None
    except (KeyError, TypeError, ValueError, cattrs.BaseValidationError) as error:
        raise GraphError(f"{source}: not a plan medm2g wrote ({type(error).__name__}: {str(error)[:200]})") from None


def _param_group(value: str) -> ParamGroup:
    modality, _, part = value.rpartition(".")
    return ParamGroup(modality, Part(part))


def _groups(groups: tuple[ParamGroup, ...]) -> str:
    return ", ".join(str(g) for g in groups) or "-"


def _datasets(stage: Stage) -> str:
    return ", ".join(stage.datasets) or "(no dataset names this modality)"


def format_plan(plan: TrainingPlan) -> str:
    graph, cost = plan.graph, plan.cost
    chosen = {"graph": "given in the graph", "most paired neighbours": "chosen: most paired neighbours"}.get(
        plan.center_chosen_by, "every pair trains a translation backend")
    lines = [
        f"Pair graph {graph.name or '(unnamed)'} ({graph.source})",
        f"  {len(graph.modalities)} modalities: {', '.join(graph.modalities)}; centre: {plan.center or 'none'} ({chosen})",
        "",
        f"Central-alignment star: {cost.alignment_edges} edges for {cost.modalities} modalities "
        f"(pairwise alignment would need {cost.pairwise_alignment_edges})" if plan.center is not None else
        "No alignment star, latent diffusion or rounds: no pair trains medm2g",
    ]
    width = max(8, *(len(name) for name in graph.modalities))  # the star's columns line up whatever the names
    for edge in plan.star:
        how = "direct to the centre" if edge.via == plan.center else f"through {edge.via} ({edge.hops_to_center} hops)"
        lines.append(f"  {edge.modality:<{width}} aligns to {edge.via:<{width}} {how:<28} {', '.join(edge.datasets)}")
    for edge in plan.unused_pairs:
        why = "unpaired data: not used for alignment" if not edge.paired else "not needed by the star"
        lines.append(f"  ({edge.label}: {why}; {', '.join(edge.dataset)})")
    titles = {
        StageKind.ALIGNMENT: "Alignment stages (section 3.2: InfoNCE eq. 3, visual invariant eq. 4)",
        StageKind.VAE: "VAEs",
        StageKind.LDM: "Single-modality latent diffusion models",
        StageKind.CROSS_GUIDED: "Multi-flow rounds (section 3.5: cross-guided training, eq. 6)",
        StageKind.ADVERSARIAL_DIFFUSION: "Translation pairs (SynDiff adversarial diffusion, a <-> b)",
    }
    for stage, edge in plan.translation_stages():  # stages other backends plan for their edges
        titles.setdefault(stage.kind, f"Pairs trained by {edge.backend} ({stage.kind.value} stages)")
    for kind, title in titles.items():
        stages = plan.stages_of(kind)
        if not stages:
            continue
        lines += ["", title]
        for number, stage in enumerate(stages, 1):
            label = "Round" if kind is StageKind.CROSS_GUIDED else "Stage"
            extra = f"  + visual invariant on {', '.join(stage.visual_invariant)}" if stage.visual_invariant else ""
            edge = next((e for e in plan.translation_edges if (e.a, e.b) == stage.modalities
                         and kind not in MEDM2G_STAGE_KINDS), None)
            if edge is not None:
                extra = "  (paired data)" if edge.paired else "  (unpaired: each sample's two images from different subjects)"
            lines.append(f"  {label} {number} (#{stage.index}) {'-'.join(stage.modalities)}: {_datasets(stage)}{extra}")
            lines.append(f"    trains: {_groups(stage.trains)}")
            lines.append(f"    frozen: {_groups(stage.frozen)}")
    medm2g_tasks = [t for t in plan.tasks if t.backend == "medm2g"]
    if plan.center is not None:
        unseen = [t for t in medm2g_tasks if not t.paired_in_training]
        lines += [
            "",
            f"Generation: any-to-any over {cost.task_pairs_enabled} modality pairs ({len(medm2g_tasks)} directed "
            f"tasks), {cost.task_pairs_without_paired_data} of the pairs ({len(unseen)} tasks) never paired in training:",
        ]
        lines += [f"  {t.source} -> {t.target}  through {'-'.join(t.path)}" for t in unseen] or ["  (none)"]
        lines.append(f"  joint: any subset of {{{', '.join(plan.joint_targets)}}} generated together from one condition")
    translations = [t for t in plan.tasks if t.backend != "medm2g"]
    if translations:
        lines += ["", "Translation (`medm2g generate --backend BACKEND`, default picks it):"]
        lines += [f"  {t.source} -> {t.target}  by {t.backend}" for t in translations]
    if plan.center is None:
        return "\n".join(lines)
    lines += [
        "",
        "Cost (central star vs pairwise):",
        f"  alignment edges {cost.alignment_edges} vs {cost.pairwise_alignment_edges}; "
        f"cross-guided rounds {cost.rounds} vs {cost.pairwise_rounds}; "
        f"paired datasets used {cost.paired_datasets_used} of {cost.paired_datasets_available}",
    ]
    return "\n".join(lines)


PART_ABBREVIATIONS = {
    Part.PROMPT_ENCODER: "C",
    Part.VAE: "VAE",
    Part.BACKBONE: "UNet",
    Part.CONDITION_ATTENTION: "attn",
    Part.CROSS_GUIDANCE: "xattn",
    Part.CONTEXT_ENCODER: "V",
    Part.ADAPTATION: "f",
    Part.SPATIAL_GUIDANCE: "spatial",
    Part.ADVERSARIAL_DIFFUSION: "SynDiff",
    Part.TRANSLATION: "translator",
}
"""Short names used where space is tight (the drawn plan), in the paper's letters."""
