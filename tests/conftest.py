"""Shared fixtures. Plugins made in a test are registered for that test alone."""

from __future__ import annotations

import pytest

from medm2g.registry import load_modalities


@pytest.fixture(scope="session")
def installed():
    """The registry of every installed modality (built-in and entry-point plugins)."""
    return load_modalities()


@pytest.fixture(scope="session")
def paper_graph(installed):
    from medm2g.core.graph.pair_graph import load_pair_graph
    from medm2g.core.graph.shipped import resolve_graph_path

    return load_pair_graph(resolve_graph_path("medm2g.yaml"), installed=installed)


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory, installed, paper_graph):
    """A 10-subject phantom cohort (seed 7), generated once per test session."""
    from medm2g.core.phantom.cohort import generate_cohort

    out = tmp_path_factory.mktemp("phantom")
    return out, generate_cohort(out, 10, 7, installed, paper_graph)
