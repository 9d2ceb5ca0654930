"""The graph engine: the paper's plan exactly, and invariants over random graphs."""

from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medm2g.core.errors import GraphError
from medm2g.core.graph.engine import ParamGroup, Part, StageKind, build_plan
from medm2g.core.graph.pair_graph import PairEdge, PairGraph, load_pair_graph

GRAPHS = Path(__file__).parents[3] / "graphs"


def groups(*names: str) -> set[str]:
    return set(names)


def as_strings(stage_groups) -> set[str]:
    return {str(group) for group in stage_groups}


def make_graph(modalities, pairs, **fields) -> PairGraph:
    return PairGraph(modalities=tuple(modalities),
                     pairs=tuple(PairEdge(a, b, f"{a}-{b}.csv", **({} if len(p) == 2 else {"paired": p[2]}))
                                 for p in pairs for a, b in [p[:2]]), **fields)


@pytest.fixture(scope="module")
def paper_plan():
    return build_plan(load_pair_graph(GRAPHS / "medm2g.yaml"), imaging={"xray", "ct", "mri"})


def test_paper_star_aligns_mri_through_ct(paper_plan):
    assert paper_plan.center == "text"
    assert [(e.modality, e.via, e.hops_to_center) for e in paper_plan.star] == [
        ("xray", "text", 1), ("ct", "text", 1), ("mri", "ct", 2)]


def test_paper_rounds_are_the_papers_three_rounds(paper_plan):
    """Section 3.5: text-xray, then text-ct with text frozen, then ct-mri with ct frozen."""
    rounds = paper_plan.rounds
    assert [r.modalities for r in rounds] == [("text", "xray"), ("text", "ct"), ("ct", "mri")]
    assert [r.datasets for r in rounds] == [("data/text-xray.csv",), ("data/text-ct.csv",), ("data/ct-mri.csv",)]
    cross = ("context_encoder", "adaptation", "cross_guidance")
    assert as_strings(rounds[0].trains) == {f"{m}.{p}" for m in ("text", "xray") for p in cross}
    assert as_strings(rounds[1].trains) == {f"ct.{p}" for p in cross}
    assert {f"text.{p}" for p in cross} <= as_strings(rounds[1].frozen)
    # the imaging pair's round also trains its own spatial guidance, new in that round (beyond the paper)
    assert as_strings(rounds[2].trains) == {f"mri.{p}" for p in cross} | {"ct-mri.spatial_guidance"}
    assert {f"ct.{p}" for p in cross} <= as_strings(rounds[2].frozen)
    assert not any(g.modality == "xray" for r in rounds[1:] for g in (*r.trains, *r.frozen))


def test_paper_alignment_stages_freeze_what_is_aligned(paper_plan):
    stages = paper_plan.stages_of(StageKind.ALIGNMENT)
    assert [as_strings(s.trains) for s in stages] == [
        {"text.prompt_encoder", "xray.prompt_encoder"}, {"ct.prompt_encoder"}, {"mri.prompt_encoder"}]
    assert as_strings(stages[2].frozen) == {"text.prompt_encoder", "xray.prompt_encoder", "ct.prompt_encoder"}
    assert [s.visual_invariant for s in stages] == [("xray",), ("ct",), ("mri",)]


def test_paper_cost_and_tasks(paper_plan):
    cost = paper_plan.cost
    assert (cost.alignment_edges, cost.pairwise_alignment_edges, cost.rounds) == (3, 6, 3)
    unseen = {(t.source, t.target) for t in paper_plan.tasks if not t.paired_in_training}
    assert ("text", "mri") in unseen and ("xray", "mri") in unseen and ("text", "ct") not in unseen
    text_to_mri = next(t for t in paper_plan.tasks if (t.source, t.target) == ("text", "mri"))
    assert text_to_mri.path == ("text", "ct", "mri")
    assert len(paper_plan.tasks) == 12


def test_freeze_center_keeps_the_centre_encoder_frozen_from_the_start():
    plan = build_plan(make_graph(["text", "ct"], [("text", "ct")], freeze_center=True))
    (stage,) = plan.stages_of(StageKind.ALIGNMENT)
    assert as_strings(stage.trains) == {"ct.prompt_encoder"}
    assert as_strings(stage.frozen) == {"text.prompt_encoder"}


def test_centre_is_chosen_as_the_best_connected_modality():
    plan = build_plan(make_graph(["ct", "mri", "text", "xray"], [("ct", "mri"), ("text", "xray"), ("text", "ct")]))
    assert (plan.center, plan.center_chosen_by) in {("text", "most paired neighbours"), ("ct", "most paired neighbours")}
    # text and ct both have two neighbours and equal total distance: the one listed first wins
    assert plan.center == "ct"


def test_a_disconnected_modality_is_named_with_the_pair_that_would_connect_it():
    graph = make_graph(["text", "ct", "pet"], [("text", "ct")], center="text")
    with pytest.raises(GraphError) as error:
        build_plan(graph)
    message = str(error.value)
    assert "modality pet has no path of paired data to the centre 'text'" in message
    assert "add a pair linking it to one of ct, text (for example text-pet)" in message


def test_unpaired_data_does_not_align():
    graph = make_graph(["text", "ct", "mri"], [("text", "ct"), ("ct", "mri", False)])
    with pytest.raises(GraphError, match="mri has no path.*its data with ct-mri is unpaired"):
        build_plan(graph)


def test_pairs_the_star_does_not_need_are_reported():
    plan = build_plan(make_graph(["text", "ct", "mri"], [("text", "ct"), ("text", "mri"), ("ct", "mri")]))
    assert [e.label for e in plan.unused_pairs] == ["ct-mri"]
    assert plan.cost.paired_datasets_used == 2 and plan.cost.paired_datasets_available == 3


@st.composite
def connected_graphs(draw, min_size=1, max_size=8):
    """A random spanning tree plus random extra pairs, listed in random order."""
    n = draw(st.integers(min_size, max_size))
    names = [f"m{i}" for i in range(n)]
    edges = {frozenset((names[i], names[draw(st.integers(0, i - 1))])) for i in range(1, n)}
    for _ in range(draw(st.integers(0, n))):
        a, b = draw(st.sampled_from(names)), draw(st.sampled_from(names))
        if a != b:
            edges.add(frozenset((a, b)))
    pairs = draw(st.permutations(sorted(tuple(sorted(e)) for e in edges)))
    modalities = draw(st.permutations(names))
    center = draw(st.none() | st.sampled_from(names))
    return make_graph(modalities, pairs, center=center)


def hop_distances(graph: PairGraph, start: str) -> dict[str, int]:
    """Independent BFS over the pairs, to check the star's paths are shortest."""
    distance, frontier = {start: 0}, [start]
    while frontier:
        frontier = [e.other(node) for node in frontier for e in graph.pairs
                    if node in (e.a, e.b) and e.other(node) not in distance]
        for node in frontier:
            distance.setdefault(node, min(distance[e.other(node)] for e in graph.pairs
                                          if node in (e.a, e.b) and e.other(node) in distance) + 1)
    return distance


@settings(max_examples=150, deadline=None)
@given(connected_graphs())
def test_star_has_n_minus_1_shortest_edges_reaching_the_centre(graph):
    plan = build_plan(graph)
    n = len(graph.modalities)
    assert len(plan.star) == n - 1
    assert plan.cost.alignment_edges == n - 1 and plan.cost.rounds == n - 1
    parent = {e.modality: e.via for e in plan.star}
    assert set(parent) == set(graph.modalities) - {plan.center}
    distance = hop_distances(graph, plan.center)
    for edge in plan.star:
        node, steps = edge.modality, 0
        while node != plan.center:
            node, steps = parent[node], steps + 1
        assert steps == edge.hops_to_center == distance[edge.modality]
        assert frozenset((edge.modality, edge.via)) in {p.key for p in graph.pairs}


def center_free(plan, stage) -> bool:
    """Without plugins every modality but the centre counts as imaging: a round between two of them
    gets a spatial guidance."""
    return plan.center not in stage.modalities


@settings(max_examples=150, deadline=None)
@given(connected_graphs())
def test_every_frozen_group_was_trained_by_an_earlier_stage(graph):
    plan = build_plan(graph)
    trained: set[ParamGroup] = set()
    for stage in plan.stages:
        assert not set(stage.trains) & set(stage.frozen)
        assert set(stage.frozen) <= trained, (stage.title, set(stage.frozen) - trained)
        assert not set(stage.trains) & trained, f"{stage.title} retrains a group"
        trained |= set(stage.trains)
    for index, stage in enumerate(plan.rounds):
        sides = {g.modality for g in stage.trains if g.part is not Part.SPATIAL_GUIDANCE}
        assert len(sides) == (2 if index == 0 else 1)
        spatial = [g for g in stage.trains if g.part is Part.SPATIAL_GUIDANCE]
        assert spatial == ([ParamGroup("-".join(stage.modalities), Part.SPATIAL_GUIDANCE)]
                           if center_free(plan, stage) else [])


@settings(max_examples=100, deadline=None)
@given(connected_graphs())
def test_the_plan_is_deterministic(graph):
    assert build_plan(graph) == build_plan(attrs.evolve(graph))


@settings(max_examples=100, deadline=None)
@given(connected_graphs(max_size=7), st.data())
def test_adding_a_modality_adds_exactly_one_alignment_edge_and_round(graph, data):
    before = build_plan(graph)
    anchor = data.draw(st.sampled_from(graph.modalities))
    grown = attrs.evolve(graph, modalities=(*graph.modalities, "new"),
                         pairs=(*graph.pairs, PairEdge(anchor, "new", "new.csv")), center=before.center)
    after = build_plan(grown)
    assert len(after.star) == len(before.star) + 1
    assert len(after.rounds) == len(before.rounds) + 1
    added = set(after.star) - set(before.star)
    assert set(before.star) <= set(after.star)
    assert [(e.modality, e.via) for e in added] == [("new", anchor)]


@settings(max_examples=100, deadline=None)
@given(connected_graphs(min_size=2))
def test_every_ordered_pair_is_a_task_along_the_star(graph):
    plan = build_plan(graph)
    n = len(graph.modalities)
    assert len(plan.tasks) == n * (n - 1)
    star_keys = {frozenset((e.modality, e.via)) for e in plan.star}
    for task in plan.tasks:
        assert task.path[0] == task.source and task.path[-1] == task.target
        assert len(set(task.path)) == len(task.path)
        assert all(frozenset(step) in star_keys for step in zip(task.path, task.path[1:]))


def translation(a: str, b: str, paired: bool = False) -> PairEdge:
    return PairEdge(a, b, f"{a}-{b}-unpaired.csv", paired=paired, backend="syndiff")


def test_a_syndiff_only_graph_trains_one_translation_stage_and_nothing_of_medm2g():
    plan = build_plan(load_pair_graph(GRAPHS / "syndiff-mri-ct.yaml"), imaging={"ct", "mri"})
    assert (plan.center, plan.star, plan.aligned) == (None, (), ())
    (stage,) = plan.stages
    assert (stage.kind, stage.modalities, stage.datasets) == (
        StageKind.ADVERSARIAL_DIFFUSION, ("mri", "ct"), ("data/mri-ct-unpaired.csv",))
    assert as_strings(stage.trains) == {"mri-ct.adversarial_diffusion"} and stage.frozen == ()
    assert [(t.source, t.target, t.backend, t.paired_in_training) for t in plan.tasks] == [
        ("mri", "ct", "syndiff", False), ("ct", "mri", "syndiff", False)]


def test_a_translation_edge_beside_the_paper_graph_adds_one_last_stage_and_two_tasks(paper_plan):
    graph = paper_plan.graph
    plan = build_plan(attrs.evolve(graph, pairs=(*graph.pairs, translation("mri", "ct"))), imaging={"xray", "ct", "mri"})
    assert plan.star == paper_plan.star and plan.stages[:-1] == paper_plan.stages
    assert plan.stages[-1].kind is StageKind.ADVERSARIAL_DIFFUSION and plan.stages[-1].index == len(plan.stages)
    assert plan.cost == paper_plan.cost  # translation edges cost no alignment and no round
    extra = [(t.source, t.target) for t in plan.tasks if t.backend == "syndiff"]
    assert extra == [("mri", "ct"), ("ct", "mri")] and len(plan.tasks) == len(paper_plan.tasks) + 2


def test_a_modality_only_a_translation_edge_reaches_is_not_aligned_and_not_stranded():
    graph = make_graph(["text", "ct", "pet"], [("text", "ct")])
    plan = build_plan(attrs.evolve(graph, pairs=(*graph.pairs, translation("ct", "pet"))), imaging={"ct", "pet"})
    assert plan.aligned == ("text", "ct")
    assert not any(g.modality == "pet" for stage in plan.stages for g in stage.trains)
    assert {(t.source, t.target) for t in plan.tasks if t.backend == "syndiff"} == {("ct", "pet"), ("pet", "ct")}


def test_translation_edges_translate_images_only():
    graph = make_graph(["text", "ct"], [("text", "ct")])
    graph = attrs.evolve(graph, pairs=(*graph.pairs, translation("text", "ct")))
    with pytest.raises(GraphError, match=r"pairs\[1\]: backend syndiff translates images; 'text' is not an imaging"):
        build_plan(graph, imaging={"ct"})


def test_the_centre_cannot_be_a_modality_with_only_translation_pairs():
    graph = PairGraph(modalities=("ct", "mri"), pairs=(translation("mri", "ct"),), center="mri")
    with pytest.raises(GraphError, match="center: 'mri' has only translation pairs"):
        build_plan(graph, imaging={"ct", "mri"})


@settings(max_examples=100, deadline=None)
@given(connected_graphs(min_size=2), st.data())
def test_a_translation_edge_changes_nothing_medm2g_plans(graph, data):
    """The star, the medm2g stages and the cost are those of the graph without the edge."""
    a, b = data.draw(st.permutations(graph.modalities))[:2]
    paired = data.draw(st.booleans())
    imaging = set(graph.modalities)  # every modality an image here, the centre too, so any pair translates
    before = build_plan(graph, imaging)
    after = build_plan(attrs.evolve(graph, pairs=(*graph.pairs, translation(a, b, paired)), center=before.center),
                       imaging)
    assert after.star == before.star and after.stages[:-1] == before.stages and after.cost == before.cost
    assert after.stages[-1].modalities == (a, b) and after.stages[-1].kind is StageKind.ADVERSARIAL_DIFFUSION


def test_the_disconnected_modality_hint_never_repeats_its_example():
    graph = PairGraph(modalities=("text", "mri", "xray"), center="text",
                      pairs=(PairEdge("mri", "xray", ("b.csv",)),), source="g.yaml")
    with pytest.raises(GraphError) as error:
        build_plan(graph)
    message = str(error.value)
    assert "modalities mri, xray have no path of paired data to the centre 'text'" in message
    assert "text-mri or text-mri" not in message and message.count("text-mri") == 1
