"""Per-step training logs as JSON lines, and their curves as a picture.

The log is appended as training goes, never rewritten in place; a resumed stage first drops
lines past the step it resumes from (replacing the file atomically), so the log of an
interrupted run equals that of an uninterrupted one. A run killed in the middle of an append
leaves a torn last line without its newline: reading ignores it and the next append cuts it off.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Mapping

from medm2g.core.errors import CheckpointError
from medm2g.core.io.checkpoints import write_text_atomically

logger = logging.getLogger(__name__)


def append_history(path: Path, rows: Iterable[Mapping[str, float]]) -> None:
    """Append ``rows``, one JSON line each, in one write. A torn last line left by a killed process
    (no newline at its end) is cut off first, so it never runs into the rows appended after it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(dict(row)) + "\n" for row in rows)
    with path.open("ab") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end:
            complete = _complete_length(path, end)
            if complete < end:
                handle.truncate(complete)
        handle.write(text.encode("utf-8"))


def _complete_length(path: Path, size: int) -> int:
    """The length of ``path``'s whole lines: up to and including its last newline."""
    with path.open("rb") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return size
        position = size
        while position > 0:
            start = max(0, position - 65536)
            handle.seek(start)
            newline = handle.read(position - start).rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            position = start
        return 0


def read_history(path: Path) -> list[dict]:
    """Every row of the log. A last line without its newline is one a killed process was writing
    when it died: ignored (a resumed stage truncates to its checkpoint's step and rewrites it)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{path}: line {number} is not a JSON row ({error.msg}); "
                                  f"the training log is damaged") from None
    if torn.strip():
        logger.info("%s: ignoring a torn last line (%d characters), left by a process that was stopped while "
                    "writing it", path, len(torn))
    return rows


def truncate_history(path: Path, last_step: int) -> None:
    """Keep rows with ``step < last_step`` (steps already covered by the resumed state); the file is
    replaced atomically (a kill leaves the old log or the new one, never half of it)."""
    rows = [row for row in read_history(path) if row["step"] < last_step]
    write_text_atomically(path, "".join(json.dumps(row) + "\n" for row in rows))


def draw_curves(rows: list[dict], path: Path, title: str, keys: Iterable[str] | None = None) -> Path:
    """One panel per logged quantity against the step, raw and smoothed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(keys or [k for k in rows[0] if k not in ("step", "seconds")]) if rows else []
    figure, axes = plt.subplots(1, max(len(keys), 1), figsize=(3.2 * max(len(keys), 1), 2.8), squeeze=False)
    steps = [row["step"] for row in rows]
    for axis, key in zip(axes[0], keys):
        values = [row[key] for row in rows]
        axis.plot(steps, values, color="#b8c2cc", linewidth=0.8)
        axis.plot(steps, smoothed(values), color="#2e6fd8", linewidth=1.5)
        axis.set_title(key, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def smoothed(values: list[float], fraction: float = 0.05) -> list[float]:
    """A trailing mean over ``fraction`` of the curve: the trend through per-batch noise."""
    window = max(1, int(len(values) * fraction))
    return [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
            for i in range(len(values))]


def draw_run_curves(histories: Mapping[str, list[dict]], path: Path, key: str = "loss") -> Path:
    """Every stage's ``key`` against its step in one picture, one panel per stage in plan order:
    the first thing to look at when a run's samples disappoint (which stage did not converge)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [(title, rows) for title, rows in histories.items() if rows and key in rows[0]]
    columns = min(4, max(1, len(stages)))
    lines = max(1, math.ceil(len(stages) / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(3.0 * columns, 2.3 * lines), squeeze=False)
    for axis in axes.flat[len(stages):]:
        axis.set_visible(False)
    for axis, (title, rows) in zip(axes.flat, stages):
        steps, values = [row["step"] for row in rows], [row[key] for row in rows]
        axis.plot(steps, values, color="#b8c2cc", linewidth=0.7)
        axis.plot(steps, smoothed(values), color="#2e6fd8", linewidth=1.4)
        axis.set_title(title, fontsize=8)
        axis.tick_params(labelsize=6)
    figure.suptitle(f"training {key} per stage (grey: per step, blue: smoothed)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
