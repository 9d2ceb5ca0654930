"""What a modality must supply: the hook specifications and the records they return.

Plugin authors import everything they need from here::

    from medm2g.registry import hookimpl, ModalitySpec, IntensityConvention

and the protocols the models they build satisfy (``PromptEncoder``, ``LatentVAE``,
``Denoiser``; :mod:`medm2g.registry.protocols`).

``hookimpl`` is built once with the right project name: a marker built by hand
with a different name would be silently ignored by pluggy.
"""

import pluggy

from medm2g.registry.hookspecs import BACKEND_HOOKS, MODALITY_HOOKS, PROJECT_NAME
from medm2g.registry.manager import (
    ENTRY_POINT_GROUP,
    Modality,
    ModalityRegistry,
    PluginSource,
    load_modalities,
    unknown_modality_message,
)
from medm2g.registry.protocols import Denoiser, ExportsPretrained, LatentVAE, PosteriorSampler, PromptEncoder
from medm2g.registry.specs import (
    TEXT_LATENT_SHAPE,
    BackendSpec,
    IntensityConvention,
    ModalityKind,
    ModalitySpec,
    ModelSize,
    PhantomRendering,
)

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = [
    "BACKEND_HOOKS",
    "BackendSpec",
    "Denoiser",
    "ENTRY_POINT_GROUP",
    "ExportsPretrained",
    "MODALITY_HOOKS",
    "PROJECT_NAME",
    "TEXT_LATENT_SHAPE",
    "IntensityConvention",
    "LatentVAE",
    "Modality",
    "ModalityKind",
    "ModalityRegistry",
    "ModalitySpec",
    "ModelSize",
    "PhantomRendering",
    "PluginSource",
    "PosteriorSampler",
    "PromptEncoder",
    "hookimpl",
    "load_modalities",
    "unknown_modality_message",
]
