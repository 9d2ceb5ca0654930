"""MedM2G's own backend, registered through ``medm2g_backends`` as any third-party backend is.

Its stages are the paper's: the VAEs, the single-modality LDMs and the multi-flow rounds
(section 3.5), trained by :mod:`medm2g.core.training`; central alignment runs before
them in :func:`medm2g.core.training.alignment.align`, since its stages share live
encoders. Its generator is the cross-guided latent diffusion sampler.
"""

from __future__ import annotations

from medm2g.core.generation.backends import CrossGuidedGenerator
from medm2g.core.graph.engine import StageKind
from medm2g.core.graph.pair_graph import BUILT_IN_BACKENDS
from medm2g.core.training.autoencoding import run_vae_stage
from medm2g.core.training.cross_guided import run_round_stage
from medm2g.core.training.latent_diffusion import run_ldm_stage
from medm2g.registry import BackendSpec, hookimpl


@hookimpl
def medm2g_backends() -> list[BackendSpec]:
    return [BackendSpec(
        name="medm2g",
        description=BUILT_IN_BACKENDS["medm2g"].description,
        stage_runners={StageKind.VAE.value: run_vae_stage, StageKind.LDM.value: run_ldm_stage,
                       StageKind.CROSS_GUIDED.value: run_round_stage},
        generator=CrossGuidedGenerator,
    )]
