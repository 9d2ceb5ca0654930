"""Starting or resuming a run folder: its data, its config and its plan.

A run folder is bound to the config it started with: resuming with a different
config would silently mix two experiments, so that is an error naming the fields
that differ (the device may change: moving a run from CPU to GPU is fine).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from medm2g.core.config.run_config import RunConfig, run_config_to_dict, structure_run_config
from medm2g.core.errors import CheckpointError, ConfigError
from medm2g.core.graph.engine import TrainingPlan, build_plan
from medm2g.core.graph.pair_graph import PairGraph, load_pair_graph
from medm2g.core.graph.plan_text import plan_to_dict
from medm2g.core.graph.shipped import shipped_graphs_dir
from medm2g.core.training.layout import RunLayout
from medm2g.registry import ModalityRegistry

logger = logging.getLogger("medm2g")

RESUMABLE_DIFFERENCES = {  # where and how it runs: the maths is the same
    "device", "attention", "latent_cache",
    "acceleration.gradient_accumulation_steps", "acceleration.gradient_checkpointing",
}


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def bind_config(layout: RunLayout, config: RunConfig) -> None:
    """Write the run's config, or check that a resumed run uses the one it started with."""
    wanted = run_config_to_dict(config)
    if layout.config.is_file():
        started = structure_run_config(yaml.safe_load(layout.config.read_text(encoding="utf-8")), str(layout.config))
        before, now = _flatten(run_config_to_dict(started)), _flatten(wanted)
        changed = sorted(k for k in before.keys() | now.keys()
                         if before.get(k) != now.get(k) and k not in RESUMABLE_DIFFERENCES)
        if changed:
            shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
            raise ConfigError(f"{layout.root}: this run was started with another config ({shown}); "
                              f"resume it with the same settings or train into a new --out folder")
        return
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.config.write_text(yaml.safe_dump(wanted, sort_keys=False), encoding="utf-8")


def is_shipped_graph(graph: PairGraph) -> bool:
    """True for a graph installed with medm2g, or a byte-identical copy of one (``graphs/medm2g.yaml``
    in a source checkout when medm2g is installed from a wheel)."""
    source = Path(graph.source)
    shipped = shipped_graphs_dir() / source.name
    if not source.is_file() or not shipped.is_file():
        return False
    return source.resolve() == shipped.resolve() or source.read_bytes() == shipped.read_bytes()


def with_default_data(graph: PairGraph, layout: RunLayout, registry: ModalityRegistry, seed: int,
                      subjects: int) -> PairGraph:
    """The graph itself, or for a graph shipped with medm2g whose manifests are absent, the
    same graph inside a phantom cohort generated into ``RUN/data`` (the embedded default data)."""
    base = graph.base_dir()
    references = [d for edge in graph.pairs for d in edge.dataset]
    if all((base / reference).is_file() for reference in references) or not is_shipped_graph(graph):
        return graph
    cohort = layout.root / "data"
    copy = cohort / Path(graph.source).name
    if not copy.is_file():
        from medm2g.core.phantom.cohort import generate_cohort

        logger.info("no data for %s: generating the phantom cohort (%d subjects, seed %d) in %s",
                    Path(graph.source).name, subjects, seed, cohort)
        generate_cohort(cohort, subjects, seed, registry, graph)
    return load_pair_graph(copy, installed=registry)


def prepare_run(graph: PairGraph, registry: ModalityRegistry, config: RunConfig, run_dir: Path) -> TrainingPlan:
    """Bind the config, provide data, and write the plan (JSON and picture) into the run folder."""
    layout = RunLayout(run_dir)
    bind_config(layout, config)
    graph = with_default_data(graph, layout, registry, config.seed, config.phantom_subjects)
    plan = plan_for(graph, registry)
    text = json.dumps(plan_to_dict(plan), indent=2) + "\n"
    if not layout.plan_json.is_file() or layout.plan_json.read_text(encoding="utf-8") != text:
        layout.plan_json.write_text(text, encoding="utf-8")  # unchanged: not written (processes after the main one)
    if not layout.plan_picture.is_file():
        from medm2g.core.graph.plan_drawing import draw_plan

        draw_plan(plan, layout.plan_picture)
    return plan


def load_run_plan(layout: RunLayout, registry: ModalityRegistry) -> TrainingPlan:
    """The plan a run folder was trained on, rebuilt from the graph its ``plan.json`` names."""
    if not layout.plan_json.is_file():
        raise CheckpointError(f"{layout.plan_json}: not found; {layout.root} has no plan "
                              f"(make one with `medm2g train GRAPH --out {layout.root}`)")
    source = json.loads(layout.plan_json.read_text(encoding="utf-8"))["source"]
    return plan_for(load_pair_graph(source, installed=registry), registry)


def plan_for(graph: PairGraph, registry: ModalityRegistry) -> TrainingPlan:
    """The graph's plan, with the visual invariant on the modalities whose plugins say they are imaging."""
    return build_plan(graph, imaging={name for name in graph.modalities if registry[name].spec.kind.is_imaging})

