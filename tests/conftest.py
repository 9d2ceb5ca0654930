"""Shared fixtures. Plugins made in a test are registered for that test alone."""

from __future__ import annotations

import os

import pytest

from medm2g.registry import load_modalities


def pytest_configure(config):
    """The README's test command runs the files in two pytest-xdist workers (``-n 2 --dist loadfile``
    in pyproject.toml): the suite's models are tiny, so two files at once on one thread each beat
    one file on two threads, and much of the suite waits on subprocesses (pip, the CLI, gloo).
    Each worker, and every process it starts, gets one thread so the two do not fight for cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


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
