"""A plan written as JSON reads back as the same plan, so a trained run never rebuilds it from a graph file."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medm2g.core.errors import CheckpointError, GraphError
from medm2g.core.graph.engine import build_plan
from medm2g.core.graph.pair_graph import PairEdge, PairGraph
from medm2g.core.graph.plan_text import plan_from_dict, plan_to_dict
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import load_run_plan, plan_for

NAMES = ("text", "ct", "mri", "xray", "pet")


def test_the_shipped_plan_round_trips_through_json(installed, paper_graph):
    plan = plan_for(paper_graph, installed)
    assert plan_from_dict(json.loads(json.dumps(plan_to_dict(plan)))) == plan


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_connected_plan_round_trips(data):
    count = data.draw(st.integers(2, 5))
    names = NAMES[:count]
    pairs = [PairEdge(names[i], data.draw(st.sampled_from(names[:i])), f"{i}.csv") for i in range(1, count)]
    if count > 2 and data.draw(st.booleans()):  # a translation edge between two imaging modalities
        pairs.append(PairEdge(names[1], names[2], "t.csv", paired=data.draw(st.booleans()), backend="syndiff"))
    graph = PairGraph(names, pairs, source="/somewhere/g.yaml")
    plan = build_plan(graph, imaging=set(names[1:]))
    back = plan_from_dict(json.loads(json.dumps(plan_to_dict(plan))))
    assert back == plan
    assert back.graph.source == "/somewhere/g.yaml"


def test_a_run_reads_its_plan_even_after_the_graph_file_is_gone(tmp_path, installed):
    graph_file = tmp_path / "g.yaml"
    graph_file.write_text("modalities: [text, ct]\npairs:\n  - {a: text, b: ct, dataset: p.csv}\n")
    from medm2g.core.graph.pair_graph import load_pair_graph

    plan = plan_for(load_pair_graph(graph_file, installed=installed), installed)
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    layout.plan_json.write_text(json.dumps(plan_to_dict(plan)))
    graph_file.unlink()
    assert load_run_plan(layout, installed) == plan


def test_a_plan_that_is_not_one_is_a_one_line_error(tmp_path, installed):
    layout = RunLayout(tmp_path)
    with pytest.raises(CheckpointError, match="no plan"):
        load_run_plan(layout, installed)
    layout.plan_json.write_text('{"graph": {"modalities": ["text"]}}')
    with pytest.raises(GraphError, match=r"plan.json: not a plan medm2g wrote") as caught:
        load_run_plan(layout, installed)
    assert "\n" not in str(caught.value)


def test_the_star_table_lines_up_whatever_the_modality_names():
    from medm2g.core.graph.plan_text import format_plan

    graph = PairGraph(("text", "ultrasound_doppler", "ct"),
                      (PairEdge("text", "ultrasound_doppler", "u.csv"), PairEdge("text", "ct", "c.csv")))
    rows = [line for line in format_plan(build_plan(graph)).splitlines() if " aligns to " in line]
    assert len(rows) == 2 and len({row.index(" aligns to ") for row in rows}) == 1
    assert len({row.index("direct to the centre") for row in rows}) == 1
