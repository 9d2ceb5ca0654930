"""Run folders: the embedded default data for shipped graphs."""

import shutil

from medm2g.core.graph.pair_graph import load_pair_graph
from medm2g.core.graph.shipped import shipped_graphs_dir
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import is_shipped_graph, with_default_data


def test_a_shipped_graph_without_data_trains_on_a_generated_phantom_cohort(installed, tmp_path):
    copy = tmp_path / "checkout" / "medm2g.yaml"  # a source checkout's graphs/medm2g.yaml
    copy.parent.mkdir()
    shutil.copyfile(shipped_graphs_dir() / "medm2g.yaml", copy)
    graph = load_pair_graph(copy, installed=installed)
    assert is_shipped_graph(graph)
    run = RunLayout(tmp_path / "run")
    with_data = with_default_data(graph, run, installed, seed=0, subjects=6)
    assert with_data.source == str(run.root / "data" / "medm2g.yaml")
    for reference in ("data/text-xray.csv", "data/text-ct.csv", "data/ct-mri.csv", with_data.evaluation):
        assert (run.root / "data" / reference).is_file(), reference
    assert with_default_data(graph, run, installed, seed=0, subjects=6) == with_data  # generated once


def test_an_edited_graph_is_not_mistaken_for_the_shipped_one(installed, tmp_path):
    edited = tmp_path / "medm2g.yaml"
    edited.write_text((shipped_graphs_dir() / "medm2g.yaml").read_text().replace("text-ct.csv", "mine.csv"))
    graph = load_pair_graph(edited, installed=installed)
    assert not is_shipped_graph(graph)
    assert with_default_data(graph, RunLayout(tmp_path / "run"), installed, seed=0, subjects=6) is graph
