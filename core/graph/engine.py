"""The graph engine: from a pair graph to the central-alignment star and the training plan.

The user lists only the paired data they have (:mod:`medm2g.core.graph.pair_graph`); this
module derives, deterministically (MedM2G, sections 3.2 and 3.5, figure 3):

* the **central-alignment star**: one alignment edge per non-central modality, to
  the centre where a pair exists, otherwise along the shortest chain of paired data
  through modalities aligned before it (MRI aligns through CT). n modalities cost
  n-1 alignment edges instead of the n(n-1)/2 of pairwise alignment;
* the **stages** of training: alignment stages along the star, a VAE and a
  single-modality LDM per modality, then the **multi-flow rounds** of cross-guided
  training along the same edges, each naming exactly which parameter groups train
  and which are frozen (and frozen groups are always ones an earlier stage trained);
* the **generation tasks** the plan enables and a **cost report**.

Ties are broken by the order the graph lists things, so the author controls them
and the same file always gives the same plan: the paper's text-xray round comes
before text-ct because that pair is listed first.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Iterable, Mapping

import attrs

from medm2g.core.errors import GraphError
from medm2g.core.graph.pair_graph import BUILT_IN_BACKENDS, PairEdge, PairGraph


class Part(str, enum.Enum):
    """The named parameter groups of one modality's models.

    These names are the vocabulary shared by the plan and the trainer: a stage
    trains or freezes ``(modality, part)`` groups, and each model splits its
    parameters into exactly these groups.
    """

    PROMPT_ENCODER = "prompt_encoder"  # C_M, section 3.2
    VAE = "vae"
    BACKBONE = "backbone"  # the denoiser without its attention to conditions
    CONDITION_ATTENTION = "condition_attention"  # cross-attention to the prompt embedding
    CROSS_GUIDANCE = "cross_guidance"  # the added sub-layer attending to V_B (eq. 6, theta_c)
    CONTEXT_ENCODER = "context_encoder"  # V_M, section 3.4
    ADAPTATION = "adaptation"  # f_M, eq. 5
    SPATIAL_GUIDANCE = "spatial_guidance"  # an imaging pair's source-to-skip-connection path, owned by the pair
    ADVERSARIAL_DIFFUSION = "adversarial_diffusion"  # a translation pair's SynDiff networks, owned by the pair
    TRANSLATION = "translation"  # what another backend trains on a pair, owned by the pair


CROSS_GUIDED_PARTS = (Part.CONTEXT_ENCODER, Part.ADAPTATION, Part.CROSS_GUIDANCE)
"""What a round trains on each side it trains (section 3.5)."""

PRETRAINED_PARTS = (Part.PROMPT_ENCODER, Part.VAE, Part.BACKBONE, Part.CONDITION_ATTENTION)
"""What every round uses frozen on both sides: trained by the alignment, VAE and LDM stages."""


@attrs.frozen(order=True)
class ParamGroup:
    """One named group of parameters, e.g. ``ct.context_encoder``. ``modality`` is the owner: a
    modality, or for what a translation edge trains (both directions of one SynDiff), the pair's
    label (``mri-ct.adversarial_diffusion``)."""

    modality: str
    part: Part

    def __str__(self) -> str:
        return f"{self.modality}.{self.part.value}"


class StageKind(str, enum.Enum):
    ALIGNMENT = "alignment"  # section 3.2, eq. 3 (+ eq. 4 for imaging modalities)
    VAE = "vae"
    LDM = "ldm"  # single-modality latent diffusion, section 3.4 "we first train the individual LDM"
    CROSS_GUIDED = "cross_guided"  # a multi-flow round, section 3.5, eq. 6
    ADVERSARIAL_DIFFUSION = "adversarial_diffusion"  # a syndiff edge: SynDiff translating a <-> b (issue #8)


class BackendStageKind(str):
    """The kind of a stage another backend plans for its edges (``"regression"``, say): a plain
    name with a ``value`` like :class:`StageKind`'s members, so both read alike."""

    @property
    def value(self) -> str:
        return str(self)


def stage_kind(value: "StageKind | str") -> "StageKind | BackendStageKind":
    """One of medm2g's own kinds where the name is one, else a backend's."""
    try:
        return StageKind(value)
    except ValueError:
        return BackendStageKind(value)


MEDM2G_STAGE_KINDS = (StageKind.ALIGNMENT, StageKind.VAE, StageKind.LDM, StageKind.CROSS_GUIDED)
"""The stage kinds of MedM2G's own backend; every other kind is a translation edge's."""

BUILT_IN_EDGE_STAGES = {name: b.edge_stage_kind for name, b in BUILT_IN_BACKENDS.items() if b.edge_stage_kind}
"""The stage kind each built-in translation backend plans per edge (from ``BUILT_IN_BACKENDS``)."""

EDGE_MODALITIES = ("images", "report-image")
"""What a translation backend's edge joins: two imaging modalities, translated both ways (SynDiff), or
a report modality and an imaging one, generated from the report (vq-ar)."""

BUILT_IN_EDGE_MODALITIES = {name: b.edge_modalities for name, b in BUILT_IN_BACKENDS.items() if b.edge_stage_kind}
"""What each built-in translation backend's edges join (from ``BUILT_IN_BACKENDS``)."""


@attrs.frozen
class Stage:
    """One step of the training plan.

    ``modalities`` is the pair (alignment edges and rounds, centre-side first) or the
    single modality (VAE, LDM). ``visual_invariant`` lists the trained imaging
    encoders that also get the Barlow Twins loss in an alignment stage.
    """

    index: int
    kind: StageKind = attrs.field(converter=stage_kind)
    modalities: tuple[str, ...]
    datasets: tuple[str, ...]
    trains: tuple[ParamGroup, ...]
    frozen: tuple[ParamGroup, ...]
    visual_invariant: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return f"{self.kind.value} {'-'.join(self.modalities)}"


@attrs.frozen
class AlignmentEdge:
    """The star edge that brings ``modality`` into the shared space through ``via``."""

    modality: str
    via: str
    datasets: tuple[str, ...]
    hops_to_center: int


@attrs.frozen
class GenerationTask:
    """Generating ``target`` from ``source``; ``paired_in_training`` says whether data of that pair existed.
    ``backend`` is the generation backend that does it (``medm2g``, or ``syndiff`` for a translation edge)."""

    source: str
    target: str
    paired_in_training: bool
    path: tuple[str, ...]  # the chain of star edges linking the two
    backend: str = "medm2g"


@attrs.frozen
class CostReport:
    """Alignment and training cost of the star against pairwise alignment (the paper's O(n) claim)."""

    modalities: int
    alignment_edges: int
    pairwise_alignment_edges: int
    rounds: int
    pairwise_rounds: int
    paired_datasets_available: int
    paired_datasets_used: int
    task_pairs_enabled: int
    task_pairs_without_paired_data: int


@attrs.frozen
class TrainingPlan:
    """``center`` is None only for a graph whose every pair trains a translation backend: then
    there is no alignment star, and no medm2g stage at all."""

    graph: PairGraph
    center: str | None
    center_chosen_by: str  # "graph", "most paired neighbours" or "no medm2g pairs"
    star: tuple[AlignmentEdge, ...]
    stages: tuple[Stage, ...]
    unused_pairs: tuple[PairEdge, ...]
    tasks: tuple[GenerationTask, ...]
    joint_targets: tuple[str, ...]
    cost: CostReport

    def stages_of(self, kind: StageKind) -> tuple[Stage, ...]:
        return tuple(stage for stage in self.stages if stage.kind == kind)

    @property
    def rounds(self) -> tuple[Stage, ...]:
        return self.stages_of(StageKind.CROSS_GUIDED)

    @property
    def aligned(self) -> tuple[str, ...]:
        """The modalities in the aligned space (the centre, then the star in alignment order)."""
        return aligned_modalities(self.center, self.star)

    @property
    def translation_edges(self) -> tuple[PairEdge, ...]:
        return tuple(edge for edge in self.graph.pairs if edge.is_translation)

    def translation_stages(self) -> tuple[tuple[Stage, PairEdge], ...]:
        """Each translation edge's stage with its edge (its backend, its data): the stages after
        MedM2G's own, planned one per translation edge in the graph's order."""
        return tuple(zip((stage for stage in self.stages if stage.kind not in MEDM2G_STAGE_KINDS),
                         self.translation_edges))


def aligned_modalities(center: str | None, star: tuple[AlignmentEdge, ...]) -> tuple[str, ...]:
    """The centre, then the star's modalities in alignment order; none without a centre."""
    return () if center is None else (center, *(edge.modality for edge in star))


def medm2g_modalities(graph: PairGraph) -> tuple[str, ...]:
    """The modalities medm2g's own stages cover: every listed one but those whose every pair trains
    a translation backend (a modality in no pair at all stays, so a stranded one is still reported)."""
    def translation_only(name: str) -> bool:
        edges = [edge for edge in graph.pairs if name in (edge.a, edge.b)]
        return bool(edges) and all(edge.is_translation for edge in edges)

    return tuple(name for name in graph.modalities if not translation_only(name))


def _paired_adjacency(graph: PairGraph) -> dict[str, dict[str, PairEdge]]:
    """Neighbours through paired data, each neighbour dict in the order the pairs are listed."""
    adjacency: dict[str, dict[str, PairEdge]] = {name: {} for name in graph.modalities}
    for edge in graph.pairs:
        if edge.paired and edge.a != edge.b and not edge.is_translation:
            adjacency[edge.a][edge.b] = edge
            adjacency[edge.b][edge.a] = edge
    return adjacency


def _hops_from(start: str, adjacency: dict[str, dict[str, PairEdge]]) -> dict[str, int]:
    hops, queue = {start: 0}, deque([start])
    while queue:
        node = queue.popleft()
        for neighbour in adjacency[node]:
            if neighbour not in hops:
                hops[neighbour] = hops[node] + 1
                queue.append(neighbour)
    return hops


def choose_center(graph: PairGraph) -> tuple[str | None, str]:
    """The given centre, or the modality with the most paired neighbours (None when every pair of
    the graph trains a translation backend).

    Ties go to the modality closest to all others (fewest total hops), then to the
    one listed first in ``modalities``.
    """
    candidates = medm2g_modalities(graph)
    if graph.center is not None:
        if graph.center not in candidates:
            raise GraphError(f"{graph.source}: center: {graph.center!r} has only translation pairs "
                             f"(backend {', '.join(sorted({e.backend for e in graph.pairs if e.is_translation}))}); "
                             f"the centre must be one of {', '.join(candidates) or 'the modalities of a medm2g pair'}")
        return graph.center, "graph"
    if not candidates:
        return None, "no medm2g pairs"
    adjacency = _paired_adjacency(graph)

    listed = {name: index for index, name in enumerate(graph.modalities)}

    def rank(name: str) -> tuple[int, int, int]:
        hops = _hops_from(name, adjacency)
        unreachable_penalty = (len(candidates) - len(hops)) * len(candidates) ** 2
        return (-len(adjacency[name]), sum(hops.values()) + unreachable_penalty, listed[name])

    return min(candidates, key=rank), "most paired neighbours"


def build_star(graph: PairGraph, center: str) -> tuple[AlignmentEdge, ...]:
    """Breadth-first from the centre over paired data.

    Each modality joins through the earliest-aligned neighbour one hop closer to
    the centre; modalities at the same distance join in the order of their
    parent's alignment, then of their pair in the graph.
    """
    adjacency = _paired_adjacency(graph)
    pair_rank = {edge.key: index for index, edge in enumerate(graph.pairs) if not edge.is_translation}
    order = {center: 0}
    hops = {center: 0}
    star: list[AlignmentEdge] = []
    frontier = [center]
    while frontier:
        candidates: dict[str, str] = {}
        for parent in frontier:  # frontier is in alignment order, so the first parent found is the earliest
            for child in adjacency[parent]:
                if child not in hops and child not in candidates:
                    candidates[child] = parent
        next_frontier = sorted(
            candidates, key=lambda child: (order[candidates[child]], pair_rank[frozenset((child, candidates[child]))])
        )
        for child in next_frontier:
            parent = candidates[child]
            hops[child] = hops[parent] + 1
            order[child] = len(order)
            star.append(AlignmentEdge(child, parent, adjacency[parent][child].dataset, hops[child]))
        frontier = next_frontier
    _check_connected(graph, center, set(hops), adjacency)
    return tuple(star)


def _check_connected(graph: PairGraph, center: str, reached: set[str], adjacency) -> None:
    stranded = [name for name in medm2g_modalities(graph) if name not in reached]
    if not stranded:
        return
    unpaired = sorted(
        edge.label for edge in graph.pairs if not edge.paired and (edge.a in stranded or edge.b in stranded)
    )
    note = f"; its data with {', '.join(unpaired)} is unpaired and cannot align it" if unpaired else ""
    others = sorted(reached - {center})
    example = f"{center}-{stranded[0]}" + (f" or {others[0]}-{stranded[0]}" if len(stranded) > 1 and others else "")
    raise GraphError(
        f"{graph.source}: modalit{'y' if len(stranded) == 1 else 'ies'} {', '.join(stranded)} "
        f"{'has' if len(stranded) == 1 else 'have'} no path of paired data to the centre {center!r}{note}; "
        f"add a pair linking {'it' if len(stranded) == 1 else 'one of them'} to one of "
        f"{', '.join(sorted(reached))} (for example {example})"
    )


def _datasets_with(graph: PairGraph, modality: str) -> tuple[str, ...]:
    """Every dataset holding ``modality``: its medm2g pairs', then its single-modality data."""
    found: list[str] = []
    for edge in sorted(graph.pairs, key=lambda e: e.label):
        if modality in (edge.a, edge.b) and not edge.is_translation:
            found.extend(d for d in edge.dataset if d not in found)
    for single in graph.single_modality:
        if single.modality == modality:
            found.extend(d for d in single.dataset if d not in found)
    return tuple(found)


def _groups(modality: str, parts: Iterable[Part]) -> tuple[ParamGroup, ...]:
    return tuple(ParamGroup(modality, part) for part in parts)


def _imaging_filter(imaging: set[str], names: Iterable[str]) -> tuple[str, ...]:
    return tuple(name for name in names if name in imaging)


def plan_stages(
    graph: PairGraph, center: str | None, star: tuple[AlignmentEdge, ...], imaging: set[str] | None = None,
    edge_stages: Mapping[str, str] | None = None, edge_modalities: Mapping[str, str] | None = None,
) -> tuple[Stage, ...]:
    """Alignment stages, VAEs, single-modality LDMs, the multi-flow rounds, then one stage per
    translation edge (SynDiff trains on its own, from nothing the other stages make), of the kind
    its backend names in ``edge_stages`` (the installed backends' ``edge_stage_kind``; SynDiff's
    ``adversarial_diffusion`` when not given).

    ``imaging`` names the imaging modalities (those that get the visual invariant);
    ``None`` treats every modality but the centre as imaging, which is right for the
    paper and for tests without plugins.
    """
    if imaging is None:
        imaging = set(graph.modalities) - {center}
    edge_stages = BUILT_IN_EDGE_STAGES if edge_stages is None else edge_stages
    edge_modalities = BUILT_IN_EDGE_MODALITIES if edge_modalities is None else edge_modalities
    stages: list[Stage] = []

    def add(kind: StageKind, modalities, datasets, trains, frozen, visual_invariant=()) -> None:
        stages.append(Stage(len(stages) + 1, kind, tuple(modalities), tuple(datasets), tuple(trains),
                            tuple(sorted(frozen)), tuple(visual_invariant)))

    if center is not None:
        _plan_medm2g_stages(graph, center, star, imaging, add)
    for index, edge in enumerate(graph.pairs):
        if edge.is_translation:
            not_imaging = [name for name in (edge.a, edge.b) if name not in imaging]
            if edge_modalities.get(edge.backend, "images") == "report-image":
                if len(not_imaging) != 1:
                    raise GraphError(f"{graph.source}: pairs[{index}]: backend {edge.backend} generates an image "
                                     f"from a report; pair one report modality with one imaging modality "
                                     f"(got {edge.a!r} and {edge.b!r})")
            elif not_imaging:
                raise GraphError(f"{graph.source}: pairs[{index}]: backend {edge.backend} translates images; "
                                 f"{', '.join(repr(n) for n in not_imaging)} is not an imaging modality")
            kind = stage_kind(edge_stages.get(edge.backend, "translation"))
            part = Part.ADVERSARIAL_DIFFUSION if kind is StageKind.ADVERSARIAL_DIFFUSION else Part.TRANSLATION
            add(kind, (edge.a, edge.b), edge.dataset, [ParamGroup(edge.label, part)], [])
    return tuple(stages)


def _plan_medm2g_stages(graph: PairGraph, center: str, star: tuple[AlignmentEdge, ...], imaging: set[str],
                        add) -> None:
    """MedM2G's own stages, in order, through ``add``."""

    aligned = [center]
    for number, edge in enumerate(star):
        first = number == 0 and not graph.freeze_center
        trained = [edge.via, edge.modality] if first else [edge.modality]
        frozen = [g for name in aligned if name not in trained for g in _groups(name, [Part.PROMPT_ENCODER])]
        add(StageKind.ALIGNMENT, (edge.via, edge.modality), edge.datasets,
            [ParamGroup(name, Part.PROMPT_ENCODER) for name in trained], frozen,
            _imaging_filter(imaging, trained))
        aligned.append(edge.modality)
    if not star and not graph.freeze_center:  # a one-modality graph still has a prompt encoder to train
        add(StageKind.ALIGNMENT, (center,), _datasets_with(graph, center), [ParamGroup(center, Part.PROMPT_ENCODER)], [],
            _imaging_filter(imaging, [center]))

    for name in aligned:
        add(StageKind.VAE, (name,), _datasets_with(graph, name), [ParamGroup(name, Part.VAE)], [])
    for name in aligned:
        frozen = [ParamGroup(name, Part.VAE)]
        if star or not graph.freeze_center:
            frozen.append(ParamGroup(name, Part.PROMPT_ENCODER))
        add(StageKind.LDM, (name,), _datasets_with(graph, name),
            _groups(name, [Part.BACKBONE, Part.CONDITION_ATTENTION]), frozen)

    for number, edge in enumerate(star):
        pair = (edge.via, edge.modality)
        trained_sides = pair if number == 0 else (edge.modality,)
        frozen_sides = () if number == 0 else (edge.via,)
        trains = [g for side in trained_sides for g in _groups(side, CROSS_GUIDED_PARTS)]
        if all(side in imaging for side in pair):  # new in this round, so nothing earlier is unfrozen
            trains.append(ParamGroup(spatial_guidance_owner(pair), Part.SPATIAL_GUIDANCE))
        frozen = [g for side in pair for g in _groups(side, PRETRAINED_PARTS)]
        frozen += [g for side in frozen_sides for g in _groups(side, CROSS_GUIDED_PARTS)]
        add(StageKind.CROSS_GUIDED, pair, edge.datasets, trains, frozen)


def spatial_guidance_owner(pair: tuple[str, str]) -> str:
    """The label that owns a round's spatial guidance (both directions): ``ct-mri``."""
    return f"{pair[0]}-{pair[1]}"


def _star_path(star: tuple[AlignmentEdge, ...], center: str, source: str, target: str) -> tuple[str, ...]:
    parent = {edge.modality: edge.via for edge in star}

    def to_center(name: str) -> list[str]:
        chain = [name]
        while chain[-1] != center:
            chain.append(parent[chain[-1]])
        return chain

    up, down = to_center(source), to_center(target)
    while len(up) > 1 and len(down) > 1 and up[-2] == down[-2]:  # drop the shared tail above the meeting point
        up.pop()
        down.pop()
    return tuple(up + down[-2::-1])


def generation_tasks(graph: PairGraph, center: str | None, star: tuple[AlignmentEdge, ...],
                     imaging: set[str] | None = None,
                     edge_modalities: Mapping[str, str] | None = None) -> tuple[GenerationTask, ...]:
    """Every ordered pair of the aligned modalities (all are linked once the star spans them), then
    both directions of every translation edge between images, and report -> image of a report-image
    edge, done by that edge's backend."""
    edge_modalities = BUILT_IN_EDGE_MODALITIES if edge_modalities is None else edge_modalities
    imaging = set(graph.modalities) - {center} if imaging is None else imaging
    paired = {edge.key for edge in graph.pairs if edge.paired and not edge.is_translation}
    names = sorted(aligned_modalities(center, star))
    tasks = [GenerationTask(source, target, frozenset((source, target)) in paired,
                            _star_path(star, center, source, target))
             for source in names for target in names if source != target]
    for edge in graph.pairs:
        if edge.is_translation:
            directions = ((edge.a, edge.b), (edge.b, edge.a))
            if edge_modalities.get(edge.backend, "images") == "report-image":
                directions = tuple((s, t) for s, t in directions if t in imaging and s not in imaging)
            tasks += [GenerationTask(source, target, edge.paired, (source, target), edge.backend)
                      for source, target in directions]
    return tuple(tasks)


def cost_report(graph: PairGraph, star, stages, tasks) -> CostReport:
    """The star's cost over the modalities medm2g aligns (translation edges are counted apart)."""
    n = len(medm2g_modalities(graph))
    used = {frozenset((edge.modality, edge.via)) for edge in star}
    task_pairs = {frozenset((t.source, t.target)) for t in tasks if t.backend == "medm2g"}
    return CostReport(
        modalities=n,
        alignment_edges=len(star),
        pairwise_alignment_edges=n * (n - 1) // 2,
        rounds=sum(1 for stage in stages if stage.kind is StageKind.CROSS_GUIDED),
        pairwise_rounds=n * (n - 1) // 2,
        paired_datasets_available=sum(1 for edge in graph.pairs if edge.paired and not edge.is_translation),
        paired_datasets_used=len(used),
        task_pairs_enabled=len(task_pairs),
        task_pairs_without_paired_data=sum(
            1 for pair in task_pairs if pair not in {e.key for e in graph.pairs if e.paired and not e.is_translation}
        ),
    )


def build_plan(graph: PairGraph, imaging: set[str] | None = None,
               edge_stages: Mapping[str, str] | None = None,
               edge_modalities: Mapping[str, str] | None = None) -> TrainingPlan:
    """Everything the trainer and sampler need, derived from a validated pair graph; ``edge_stages``
    maps each translation backend to the stage kind it trains per edge, ``edge_modalities`` to what its
    edges join (``EDGE_MODALITIES``; see :func:`plan_stages`)."""
    if not graph.modalities:
        raise GraphError(f"{graph.source}: a pair graph needs at least one modality")
    center, chosen_by = choose_center(graph)
    star = build_star(graph, center) if center is not None else ()
    stages = plan_stages(graph, center, star, imaging, edge_stages, edge_modalities)
    tasks = generation_tasks(graph, center, star, imaging, edge_modalities)
    star_keys = {frozenset((edge.modality, edge.via)) for edge in star}
    unused = tuple(sorted((e for e in graph.pairs if e.key not in star_keys and not e.is_translation),
                          key=lambda e: e.label))
    return TrainingPlan(
        graph=graph,
        center=center,
        center_chosen_by=chosen_by,
        star=star,
        stages=stages,
        unused_pairs=unused,
        tasks=tasks,
        joint_targets=tuple(sorted(aligned_modalities(center, star))),
        cost=cost_report(graph, star, stages, tasks),
    )
