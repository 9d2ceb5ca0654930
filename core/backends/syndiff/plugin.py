"""SynDiff registered as a backend: its plan stage trains an edge's adversarial diffusion, its
generator translates one image modality into the other in the schedule's few steps."""

from __future__ import annotations

from medm2g.core.backends.syndiff.stage import run_syndiff_stage
from medm2g.core.backends.syndiff.translation import SynDiffTranslator
from medm2g.core.graph.engine import StageKind
from medm2g.core.graph.pair_graph import BUILT_IN_BACKENDS
from medm2g.registry import BackendSpec, hookimpl


@hookimpl
def medm2g_backends() -> list[BackendSpec]:
    facts = BUILT_IN_BACKENDS["syndiff"]
    return [BackendSpec(
        name="syndiff",
        description=facts.description,
        stage_runners={StageKind.ADVERSARIAL_DIFFUSION.value: run_syndiff_stage},
        generator=SynDiffTranslator,
        edge_stage_kind=facts.edge_stage_kind,
        edge_modalities=facts.edge_modalities,
    )]
