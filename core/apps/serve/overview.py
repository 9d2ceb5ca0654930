"""The run at a glance: the plan picture, the training curves and the evaluation tables it holds.

Read from the run folder as training and ``medm2g eval`` left it (a demo folder also has its
``report.md`` and one picture of every curve); whatever is missing is said, not hidden.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from medm2g.core.training.layout import RunLayout

EVAL_TABLES = ("generation.md", "retrieval.md", "finding-ladder.md", "other-words.md")
"""``RUN/eval`` tables, in the order the page shows them."""


@attrs.frozen
class RunOverview:
    plan_picture: Path | None
    pictures: tuple[tuple[Path, str], ...]  # (picture, caption): loss curves, then evaluation pictures
    tables: str  # Markdown


def _stage_curves(layout: RunLayout) -> list[tuple[Path, str]]:
    stages = sorted((layout.root / "stages").glob("*/curves.png"))
    return [(path, f"stage {path.parent.name}: loss curves") for path in stages]


def run_overview(run_dir: Path | str) -> RunOverview:
    layout = RunLayout(run_dir)
    pictures: list[tuple[Path, str]] = []
    combined = layout.root / "curves.png"  # the demo's one picture of every stage
    pictures += [(combined, "every stage's loss curves")] if combined.is_file() else _stage_curves(layout)
    pictures += [(path, f"evaluation: {path.stem}") for path in sorted(layout.eval_dir.glob("*.png"))]
    parts = []
    for name in EVAL_TABLES:
        path = layout.eval_dir / name
        if path.is_file():
            parts.append(f"### {path.stem}\n\n{path.read_text(encoding='utf-8')}")
    if not parts:
        parts.append(f"No evaluation yet: `medm2g eval {layout.root}` scores the run on held-out subjects.")
    report = layout.root / "report.md"
    if report.is_file():
        parts.insert(0, f"The demo's report is `{report}`.")
    plan = layout.plan_picture if layout.plan_picture.is_file() else None
    return RunOverview(plan, tuple(pictures), "\n\n".join(parts))
