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


def test_the_graph_s_intensity_window_is_bound_into_the_run_config_unless_the_config_sets_one(installed, tmp_path):
    from medm2g.core.config.run_config import load_run_config, structure_run_config
    from medm2g.core.training.run import open_run

    graph = tmp_path / "g.yaml"
    graph.write_text("modalities: [text, ct]\npairs: [{a: text, b: ct, dataset: d.csv}]\n"
                     "intensity_windows: {ct: [-100, 200]}\n")
    tiny = {"size": "tiny", "device": "cpu"}
    run = open_run(graph, tmp_path / "run", structure_run_config(tiny), registry=installed)
    assert run.registry["ct"].spec.intensity.window == (-100.0, 200.0)
    assert load_run_config(run.layout.config).grids["ct"].intensity_window == (-100.0, 200.0)  # what eval reads
    assert installed["ct"].spec.intensity.window == (-1000.0, 1000.0)  # the plugin's own is untouched
    own = structure_run_config({**tiny, "grids": {"ct": {"intensity_window": [0, 80]}}})
    assert open_run(graph, tmp_path / "run2", own, registry=installed).registry["ct"].spec.intensity.window == (0.0, 80.0)
