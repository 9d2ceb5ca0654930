"""The ``vq-ar`` backend registered as a plugin: its plan stage trains a report-image edge's codebook,
alignment and transformer; its generator writes images from reports through their prompts."""

from __future__ import annotations

from medm2g.core.backends.vq_ar.evaluation import evaluate_vq_ar
from medm2g.core.backends.vq_ar.generator import VQArGenerator
from medm2g.core.backends.vq_ar.stage import BACKEND, run_vq_ar_stage
from medm2g.core.graph.pair_graph import BUILT_IN_BACKENDS
from medm2g.registry import BackendSpec, hookimpl


@hookimpl
def medm2g_backends() -> list[BackendSpec]:
    facts = BUILT_IN_BACKENDS[BACKEND]
    return [BackendSpec(
        name=BACKEND,
        description=facts.description,
        stage_runners={facts.edge_stage_kind: run_vq_ar_stage},
        generator=VQArGenerator,
        edge_stage_kind=facts.edge_stage_kind,
        edge_modalities=facts.edge_modalities,
        evaluator=evaluate_vq_ar,
    )]
