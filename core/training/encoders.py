"""Prompt encoders C_M for a run: built reproducibly, saved and loaded by modality."""

from __future__ import annotations

import contextlib
import zlib
from typing import Iterable, Iterator

import torch
from torch import nn

from medm2g.core.config.run_config import RunConfig
from medm2g.core.errors import CheckpointError
from medm2g.core.io.checkpoints import load_module, read_metadata, save_module
from medm2g.core.prompting.for_run import RunPrompts, read_prompts_instead_of_reports
from medm2g.core.training.layout import RunLayout
from medm2g.registry import ModalityKind, ModalityRegistry


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def modality_seed(seed: int, modality: str) -> int:
    """A per-modality seed, so a modality's initial weights do not depend on which others exist."""
    return (seed * 1_000_003 + zlib.crc32(modality.encode())) % 2**63


@contextlib.contextmanager
def seeded_init(seed: int, modality: str) -> Iterator[None]:
    """Build a model inside this to give it initial weights fixed by (seed, modality) alone,
    without disturbing the global random state. Each kind of model passes its own ``seed``
    offset so that, say, the VAE and the denoiser of one modality do not start alike."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(modality_seed(seed, modality))
        yield


def build_prompt_encoder(registry: ModalityRegistry, modality: str, config: RunConfig) -> nn.Module:
    """C_M for ``modality`` at the run's size and width, initialised from the run seed; a report
    modality's reads anatomy-pathology prompts instead of reports with ``prompting.condition_on_prompts``."""
    with seeded_init(config.seed, modality):
        encoder = registry[modality].prompt_encoder(
            config.size, config.embed_dim, config.model_options(modality, "prompt_encoder")
        )
    if config.prompting.condition_on_prompts and registry[modality].spec.kind is ModalityKind.TEXT:
        read_prompts_instead_of_reports(encoder, RunPrompts.for_config(registry, config))
    return encoder


def save_prompt_encoder(layout: RunLayout, modality: str, encoder: nn.Module, config: RunConfig, stage: str) -> None:
    save_module(layout.encoder(modality), encoder,
                {"modality": modality, "size": config.size.value, "embed_dim": str(config.embed_dim), "stage": stage})


def load_prompt_encoders(registry: ModalityRegistry, modalities: Iterable[str], config: RunConfig,
                         layout: RunLayout) -> dict[str, nn.Module]:
    """The aligned C_M of each modality, from a run that has completed its alignment stages."""
    encoders = {}
    for modality in modalities:
        path = layout.encoder(modality)
        if not path.is_file():
            raise CheckpointError(f"{path}: no aligned encoder for {modality!r} in this run; run `medm2g align` first")
        saved = read_metadata(path)
        if saved.get("embed_dim") not in (None, str(config.embed_dim)) or saved.get("size") not in (None, config.size.value):
            raise CheckpointError(
                f"{path}: saved at size {saved.get('size')} width {saved.get('embed_dim')}, "
                f"but the run config asks for size {config.size.value} width {config.embed_dim}"
            )
        encoders[modality] = load_module(path, build_prompt_encoder(registry, modality, config)).eval()
    return encoders
