"""Sample grids of every kind of task a trained run can do, from held-out subjects.

The tasks follow from the plan rather than a fixed list, so a graph with PET gets PET
grids: the centre's reports to every other modality, every other modality back to a
report, each star edge that links two non-central modalities (MRI to CT in the paper's
graph), and joint generation of all non-central modalities from a report (figure 4c).
Each task is written by :func:`~medm2g.core.generation.outputs.write_generation`, so its
folder holds the files, ``generation.json`` (seeds, command) and ``grid.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import attrs

from medm2g.core.data.manifest import Manifest
from medm2g.core.data.paired_dataset import PairedDataset
from medm2g.core.generation.backends import CrossGuidedGenerator, GenerationRequest
from medm2g.core.generation.conditions import Condition
from medm2g.core.generation.outputs import write_generation
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.graph.engine import TrainingPlan


@attrs.frozen
class ShowcaseTask:
    """Generate ``outputs`` from ``source`` (jointly when ``joint``); ``name`` is its folder."""

    name: str
    source: str
    outputs: tuple[str, ...]
    joint: bool = False
    trained_together: bool = True

    @property
    def title(self) -> str:
        outputs = " + ".join(self.outputs)
        return f"{self.source} -> {outputs}" + (" (joint)" if self.joint else "")


def showcase_tasks(plan: TrainingPlan, run: TrainedRun) -> list[ShowcaseTask]:
    """The tasks worth looking at for this plan, restricted to what the run has models for."""
    centre, generatable, conditionable = plan.center, set(run.generatable()), set(run.conditionable())
    others = [m for m in plan.graph.modalities if m != centre]
    paired = {frozenset((edge.modality, edge.via)) for edge in plan.star}
    tasks = []
    if centre in conditionable:
        tasks += [ShowcaseTask(f"{centre}-to-{m}", centre, (m,), trained_together=frozenset((centre, m)) in paired)
                  for m in others if m in generatable]
    if centre in generatable:
        tasks += [ShowcaseTask(f"{m}-to-{centre}", m, (centre,), trained_together=frozenset((centre, m)) in paired)
                  for m in others if m in conditionable]
    tasks += [ShowcaseTask(f"{edge.modality}-to-{edge.via}", edge.modality, (edge.via,))
              for edge in plan.star if edge.via != centre and edge.modality in conditionable and edge.via in generatable]
    joint = [m for m in others if m in run.jointly_generatable()]
    if centre in conditionable and len(joint) >= 2:
        tasks.append(ShowcaseTask(f"{centre}-to-{'-'.join(joint)}-joint", centre, tuple(joint), joint=True,
                                  trained_together=False))
    return tasks


def showcase_conditions(manifest: Manifest, run: TrainedRun, sources: set[str], count: int) -> dict[str, list[Condition]]:
    """The first ``count`` held-out subjects' samples of each source modality, named by subject."""
    conditions = {}
    for source in sorted(sources):
        dataset = PairedDataset(manifest, [source], run.registry, split=None)
        conditions[source] = [Condition(source, item[source], f"{source} of {item['subject_id']}")
                              for item in (dataset[i] for i in range(min(count, len(dataset))))]
    return conditions


def write_showcase(run: TrainedRun, plan: TrainingPlan, manifest: Manifest, out: Path, subjects: int = 3,
                   seed: int = 0, steps: int | None = None, command: str = "") -> list[dict]:
    """Generate and write every showcase task into ``out/<task>/``; returns one summary per task
    (its title, folder, grid picture, seconds and the reports it generated)."""
    tasks = showcase_tasks(plan, run)
    conditions = showcase_conditions(manifest, run, {t.source for t in tasks}, subjects)
    generator = CrossGuidedGenerator(run)
    summaries = []
    for task in tasks:
        started = time.perf_counter()
        request = GenerationRequest(outputs=task.outputs, conditions=conditions[task.source], seed=seed,
                                    joint=task.joint, steps=steps, batch_size=subjects)
        samples = generator.generate(request)
        record = write_generation(out / task.name, request, samples, run.registry,
                                  model=f"medm2g run {run.layout.root.resolve()}", backend="medm2g", command=command,
                                  details=generator.describe(request))
        reports = [text for row in record["rows"] for text in row.get("text", {}).values()]
        summaries.append({"task": task.title, "folder": str(out / task.name), "grid": str(out / task.name / "grid.png"),
                          "trained_together": task.trained_together, "seconds": round(time.perf_counter() - started, 1),
                          "reports": reports})
    return summaries
