"""A phantom cohort cut short is never trusted: its graph copy, the mark of completion, is removed
first and written last (#19, item 6). Rendering is replaced by records of files that are not
there (what is tested is the order of the writes), so these run in milliseconds."""

from pathlib import Path

import pytest

from medm2g.core.phantom import cohort as cohort_module
from medm2g.core.phantom import overview
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import with_default_data


class Killed(BaseException):
    """Stands for SIGKILL: nothing after the point it is raised at runs."""


@pytest.fixture(autouse=True)
def no_rendering(monkeypatch, paper_graph):
    def records(n, seed, renderers, out, workers):
        return [cohort_module.SubjectRecord(f"S{i:04d}", {m: f"subjects/S{i:04d}/{m}.png" for m in paper_graph.modalities},
                                            {}, {}, {}, 0) for i in range(n)]

    monkeypatch.setattr(cohort_module, "_render_all", records)
    monkeypatch.setattr(overview, "draw_overview", lambda *args, **kwargs: None)


@pytest.fixture()
def kill_at(monkeypatch):
    def arm(module, name):
        def killed(*args, **kwargs):
            raise Killed(name)

        monkeypatch.setattr(module, name, killed)

    return arm


def test_a_cohort_killed_before_its_manifests_leaves_no_graph_copy(tmp_path, installed, paper_graph, kill_at):
    kill_at(cohort_module, "write_manifests")
    with pytest.raises(Killed):
        cohort_module.generate_cohort(tmp_path, 5, 1, installed, paper_graph, workers=1)
    assert not (tmp_path / "medm2g.yaml").exists()


def test_a_run_resumed_after_a_cut_cohort_makes_it_again(tmp_path, installed, paper_graph, monkeypatch):
    layout = RunLayout(tmp_path / "run")
    real = cohort_module.write_manifests
    monkeypatch.setattr(cohort_module, "write_manifests", lambda *args: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        with_default_data(paper_graph, layout, installed, seed=1, subjects=5)
    monkeypatch.setattr(cohort_module, "write_manifests", real)
    graph = with_default_data(paper_graph, layout, installed, seed=1, subjects=5)
    assert all((graph.base_dir() / dataset).is_file() for edge in graph.pairs for dataset in edge.dataset)


def test_a_cohort_made_again_and_cut_short_is_not_complete_any_more(tmp_path, installed, paper_graph, kill_at):
    cohort_module.generate_cohort(tmp_path, 5, 1, installed, paper_graph, workers=1)
    assert (tmp_path / "medm2g.yaml").is_file()
    kill_at(overview, "draw_overview")
    with pytest.raises(Killed):
        cohort_module.generate_cohort(tmp_path, 5, 1, installed, paper_graph, workers=1)
    assert not (tmp_path / "medm2g.yaml").exists()
    assert not list(tmp_path.rglob("*.partial"))


def test_a_complete_cohort_holds_its_graph_and_every_manifest(tmp_path, installed, paper_graph):
    summary = cohort_module.generate_cohort(tmp_path, 5, 1, installed, paper_graph, workers=1)
    assert (tmp_path / "medm2g.yaml").read_bytes() == Path(paper_graph.source).read_bytes()
    assert all((tmp_path / manifest).is_file() for manifest in summary.manifests)
    assert not list(tmp_path.rglob("*.partial"))
