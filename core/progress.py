"""Progress bars for anything longer than a few seconds (tqdm, quiet when not on a terminal)."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

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
