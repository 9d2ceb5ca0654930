"""Progress bars for anything longer than a few seconds (tqdm, quiet when not on a terminal)."""

from __future__ import annotations

import contextlib
import contextvars
import sys
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, unit: str = "it", total: int | None = None) -> Iterable[T]:
    """Wrap an iterable in a tqdm bar on stderr; disabled when stderr is not a terminal, and on every
    process of a distributed run but the first (one bar, not one per process)."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, total=total, disable=not sys.stderr.isatty() or not _first_process(),
                leave=False)


def _first_process() -> bool:
    import torch.distributed as distributed

    return not (distributed.is_available() and distributed.is_initialized()) or distributed.get_rank() == 0


StepListener = Callable[[int, int], None]
"""Told (steps done, steps in all) after each step of a long loop."""

_step_listener: contextvars.ContextVar[StepListener | None] = contextvars.ContextVar("medm2g_step_listener",
                                                                                    default=None)


@contextlib.contextmanager
def listening_to_steps(listener: StepListener) -> Iterator[None]:
    """Within the block, loops that call :func:`step_done` (the sampler's reverse process) tell
    ``listener``: a web page's progress bar follows sampling without the sampler knowing of pages.
    Context-local, so two requests served on two threads each hear their own steps."""
    token = _step_listener.set(listener)
    try:
        yield
    finally:
        _step_listener.reset(token)


def step_done(done: int, total: int) -> None:
    """Tell the listener of this context, if any, that ``done`` of ``total`` steps are finished."""
    listener = _step_listener.get()
    if listener is not None:
        listener(done, total)
