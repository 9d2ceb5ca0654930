"""Starting or resuming a run folder: its data, its config and its plan, held in one :class:`Run`.

:func:`open_run` is the one way a run is prepared (``medm2g train``/``align``, the demo and
the ablation all call it): the graph read and checked, the run's modalities (the graph's
intensity windows, then the config's grids applied), the config bound to the folder, the default data provided and the plan
written, by the main process first. Every stage then takes the :class:`Run` and its stage.

A run folder is bound to the config it started with: resuming with a different
config would silently mix two experiments, so that is an error naming the fields
that differ (the device may change: moving a run from CPU to GPU is fine).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import attrs
import yaml

from medm2g.core.config.run_config import RunConfig, run_config_to_dict, structure_run_config
from medm2g.core.errors import CheckpointError, ConfigError
from medm2g.core.graph.engine import TrainingPlan, build_plan
from medm2g.core.graph.pair_graph import PairGraph, load_pair_graph, validate_pair_graph
from medm2g.core.graph.plan_text import plan_from_dict, plan_to_dict
from medm2g.core.graph.shipped import resolve_graph_path, shipped_graphs_dir
from medm2g.core.io.checkpoints import write_text_atomically
from medm2g.core.training.encoders import resolve_device
from medm2g.core.training.engine import Engine
from medm2g.core.training.layout import RunLayout
from medm2g.registry import ModalityRegistry, load_modalities

logger = logging.getLogger("medm2g")

RESUMABLE_DIFFERENCES = {  # where and how it runs: the maths is the same
    "device", "attention", "latent_cache",
    "acceleration.gradient_accumulation_steps", "acceleration.gradient_checkpointing",
}

DIVERGENCE_FIXES = {  # what a diverged stage is resumed with: the config.yaml is then rewritten
    "alignment.learning_rate", "alignment.warmup_steps", "vae.learning_rate", "vae.warmup_steps",
    "ldm.learning_rate", "ldm.text_learning_rate", "ldm.warmup_steps",
    "cross_guidance.learning_rate", "cross_guidance.spatial_learning_rate", "cross_guidance.warmup_steps",
    "acceleration.skip_nonfinite_steps",
    "syndiff.generator_learning_rate", "syndiff.discriminator_learning_rate",
    "vq_ar.codebook_learning_rate", "vq_ar.alignment_learning_rate", "vq_ar.transformer_learning_rate",
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
        differing = {k for k in before.keys() | now.keys() if before.get(k) != now.get(k)}
        changed = sorted(differing - RESUMABLE_DIFFERENCES - DIVERGENCE_FIXES)
        if changed:
            shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
            raise ConfigError(f"{layout.root}: this run was started with another config ({shown}); "
                              f"resume it with the same settings or train into a new --out folder")
        fixes = sorted(differing & DIVERGENCE_FIXES)
        if not fixes:
            return
        logger.warning("%s: resuming with %s changed (a diverged stage's fix); config.yaml now says so",
                       layout.root, ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in fixes))
        write_text_atomically(layout.config, yaml.safe_dump(wanted, sort_keys=False))
        return
    layout.root.mkdir(parents=True, exist_ok=True)
    write_text_atomically(layout.config, yaml.safe_dump(wanted, sort_keys=False))


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
    if graph.source != "<memory>":  # eval and generate may run from another directory
        graph = attrs.evolve(graph, source=str(Path(graph.source).resolve()))
    plan = plan_for(graph, registry)
    text = json.dumps(plan_to_dict(plan), indent=2) + "\n"
    if not layout.plan_json.is_file() or layout.plan_json.read_text(encoding="utf-8") != text:
        write_text_atomically(layout.plan_json, text)  # unchanged: not written (processes after the main one)
    if not layout.plan_picture.is_file():
        from medm2g.core.graph.plan_drawing import draw_plan

        draw_plan(plan, layout.plan_picture)
    return plan


def load_run_plan(layout: RunLayout, registry: ModalityRegistry) -> TrainingPlan:
    """The plan a run folder was trained on, read back in full from its ``plan.json`` (never rebuilt
    from a graph file, which may have moved or changed since); its modalities must be installed."""
    if not layout.plan_json.is_file():
        raise CheckpointError(f"{layout.plan_json}: not found; {layout.root} has no plan "
                              f"(make one with `medm2g train GRAPH --out {layout.root}`)")
    try:
        data = json.loads(layout.plan_json.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{layout.plan_json}: unreadable ({error})") from None
    plan = plan_from_dict(data, str(layout.plan_json))
    validate_pair_graph(plan.graph, registry)
    return plan


def plan_for(graph: PairGraph, registry: ModalityRegistry) -> TrainingPlan:
    """The graph's plan, with the visual invariant on the modalities whose plugins say they are imaging,
    and each translation edge planned as the stage kind its installed backend trains."""
    backends = {name: backend for name, backend in registry.backends.items() if backend.edge_stage_kind}
    edge_stages = {name: backend.edge_stage_kind for name, backend in backends.items()} if registry.backends else None
    edge_modalities = {name: backend.edge_modalities for name, backend in backends.items()} \
        if registry.backends else None
    return build_plan(graph, imaging={name for name in graph.modalities if registry[name].spec.kind.is_imaging},
                      edge_stages=edge_stages, edge_modalities=edge_modalities)



@attrs.frozen(eq=False)
class Run:
    """One run and everything its stages share: the config, the modalities as this run sees them
    (its grids applied), the plan, the run folder's layout and this process's training engine."""

    config: RunConfig
    registry: ModalityRegistry
    plan: TrainingPlan
    layout: RunLayout
    engine: Engine

    @property
    def root(self) -> Path:
        return self.layout.root

    @classmethod
    def for_plan(cls, plan: TrainingPlan, registry: ModalityRegistry, config: RunConfig, run_dir: Path | str,
                 engine: Engine | None = None) -> "Run":
        """A Run around a plan already prepared in ``run_dir`` (tests and benchmarks that build
        their own plan); commands prepare theirs with :func:`open_run`."""
        engine = engine or Engine(config.acceleration, resolve_device(config.device))
        return cls(config, registry, plan, RunLayout(run_dir), engine)


def open_run(graph: PairGraph | Path | str, out: Path | str, config: RunConfig, *,
             registry: ModalityRegistry | None = None, engine: Engine | None = None) -> Run:
    """Start or resume the run folder ``out`` of ``graph`` (a path, or the name of a shipped graph)
    with ``config``: the main process binds the config and writes the plan and any phantom cohort
    first, the other processes of an ``accelerate launch`` then read them."""
    engine = engine or Engine(config.acceleration, resolve_device(config.device))
    installed = registry if registry is not None else load_modalities()
    if not isinstance(graph, PairGraph):
        graph = load_pair_graph(resolve_graph_path(str(graph)), installed=installed)
    config = config.with_data_windows(graph.intensity_windows)  # the data's windows, bound with the config
    modalities = config.modalities(installed)
    with engine.main_first():
        plan = prepare_run(graph, modalities, config, Path(out))
    return Run(config, modalities, plan, RunLayout(out), engine)
