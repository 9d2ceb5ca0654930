"""Thread pools sized from the usable cores, the user's settings first (#19, item 8)."""

import pytest

from medm2g.core import threads
from medm2g.core.threads import configure_threads, usable_cores


@pytest.fixture()
def three_cores(monkeypatch):
    """A process allowed on 3 of the machine's cores (taskset, a cgroup's cpuset)."""
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 64)


@pytest.fixture()
def torch_threads(monkeypatch):
    """What configure_threads asks of the loaded torch (recorded, not applied to this test process)."""
    import torch

    asked = []
    monkeypatch.setattr(torch, "set_num_threads", asked.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    return asked


def test_the_usable_cores_are_the_affinity_not_the_machine(three_cores):
    assert usable_cores() == 3


def test_without_settings_the_pools_fit_the_usable_cores_and_waiting_threads_sleep(three_cores, torch_threads):
    environ = {}
    settings = configure_threads(None, environ)
    assert (settings.threads, settings.cores, settings.source, settings.wait_policy) == (3, 3, "cores", "PASSIVE")
    assert environ == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3",
                       "OMP_WAIT_POLICY": "PASSIVE"}
    assert torch_threads == [3]


def test_the_environment_the_user_set_wins(three_cores, torch_threads):
    environ = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE", "MKL_NUM_THREADS": "2"}
    settings = configure_threads(None, environ)
    assert (settings.threads, settings.source, settings.wait_policy) == (1, "OMP_NUM_THREADS", "ACTIVE")
    assert environ == {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE", "MKL_NUM_THREADS": "2",
                       "OPENBLAS_NUM_THREADS": "1"}
    assert torch_threads == [1]


def test_the_threads_option_wins_over_the_environment(three_cores, torch_threads):
    environ = {"OMP_NUM_THREADS": "8,2", "MKL_NUM_THREADS": "8"}
    settings = configure_threads(2, environ)
    assert (settings.threads, settings.source) == (2, "--threads")
    assert environ["OMP_NUM_THREADS"] == environ["MKL_NUM_THREADS"] == environ["OPENBLAS_NUM_THREADS"] == "2"
    assert torch_threads == [2]


@pytest.mark.parametrize("value, expected", [("4,2", 4), ("", 3), ("abc", 3), ("0", 3)])
def test_omp_num_threads_is_read_as_openmp_reads_it(three_cores, torch_threads, value, expected):
    assert configure_threads(None, {"OMP_NUM_THREADS": value}).threads == expected
