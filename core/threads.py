"""Thread pools sized once, at start-up, to the cores this process may use, and told to sleep
when they wait.

PyTorch's intra-op pool, the OpenMP runtime under it (MKL and oneDNN use it too) and OpenBLAS
under numpy and scipy each size themselves when their library loads. OpenMP's default wait
policy then has a thread that finished its share of a parallel loop spin, for a while, waiting
for the others. On an idle machine that costs nothing; beside a busy neighbour the thread being
waited for is often not running, and the waiting ones burn the core it needs: the issue this
module answers (#19, item 8) measured 0.5 s steps stalling for about 21 s each, at 100 % system
time, with two CPU-bound processes on a 2-core machine. ``OMP_WAIT_POLICY=PASSIVE`` makes a
waiting thread sleep (the table in ``benchmarks/README.md`` shows what it costs and buys).

The libraries read these variables when they load, so :func:`configure_threads` must run
before anything imports torch or numpy: the command line calls it first thing in ``main()``.
What the user set wins: ``--threads N``, else ``OMP_NUM_THREADS``; ``OMP_WAIT_POLICY`` from the
environment is kept as it is.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import MutableMapping

import attrs

logger = logging.getLogger(__name__)

THREAD_COUNT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""Read by OpenMP (and torch's intra-op pool, which follows it), MKL and OpenBLAS when they load."""
DEFAULT_WAIT_POLICY = "PASSIVE"


@attrs.frozen
class ThreadSettings:
    """What :func:`configure_threads` decided: ``threads`` intra-op threads of ``cores`` usable, and why."""

    cores: int
    threads: int
    source: str  # "--threads", "OMP_NUM_THREADS" or "cores"
    wait_policy: str

    def describe(self) -> str:
        return (f"threads: {self.threads} ({self.source}; {self.cores} usable cores), "
                f"OMP_WAIT_POLICY={self.wait_policy}")


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: taskset, cgroups' cpusets, a batch
    scheduler's allocation), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return os.cpu_count() or 1


def thread_count(text: str) -> int:
    """``--threads``'s type: a positive whole number."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of threads, got {text[:20]!r}")
    return value


def _environment_count(value: str | None) -> int | None:
    """OMP_NUM_THREADS's first level ("4" or "4,2"), or None when unset or not a positive number."""
    first = (value or "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def configure_threads(threads: int | None = None,
                      environ: MutableMapping[str, str] | None = None) -> ThreadSettings:
    """Size the thread pools and set the wait policy; call once, before torch or numpy is imported.

    ``threads`` (the ``--threads`` option) sets every pool; without it ``OMP_NUM_THREADS`` from
    the environment does, and without that the usable cores do (variables the user set for MKL or
    OpenBLAS are then kept). ``OMP_WAIT_POLICY`` from the environment is kept, else it is set to
    ``PASSIVE``. Where torch is already loaded (``main()`` called from Python) its intra-op pool is
    resized too; its OpenMP runtime read the wait policy when it loaded and keeps it."""
    environ = os.environ if environ is None else environ
    cores = usable_cores()
    from_environment = _environment_count(environ.get("OMP_NUM_THREADS"))
    if threads is not None:
        count, source = threads, "--threads"
        for name in THREAD_COUNT_VARIABLES:
            environ[name] = str(count)
    else:
        count, source = (from_environment, "OMP_NUM_THREADS") if from_environment else (cores, "cores")
        for name in THREAD_COUNT_VARIABLES:
            environ.setdefault(name, str(count))
    wait_policy = environ.setdefault("OMP_WAIT_POLICY", DEFAULT_WAIT_POLICY)
    if "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != count:
            torch.set_num_threads(count)
    settings = ThreadSettings(cores, count, source, wait_policy)
    logger.debug("%s", settings.describe())
    return settings
