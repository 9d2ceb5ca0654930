"""The trained models of one run folder, loaded on first use and kept.

Generation needs a different subset for every task (text to MRI needs C_text, MRI's
denoiser and MRI's VAE; joint generation also needs each output's cross-guided
parts), so nothing is loaded until a task asks for it. The run's own
``config.yaml`` says how the models were built; only the device may differ.
"""

from __future__ import annotations

import functools
from pathlib import Path

import attrs
import torch
from torch import nn

from medm2g.core.config.run_config import RunConfig, load_run_config, with_overrides
from medm2g.core.diffusion.attention import configure_attention
from medm2g.core.errors import CheckpointError
from medm2g.core.training.autoencoding import load_vae
from medm2g.core.training.cross_guided import CrossGuidedSide, build_side
from medm2g.core.training.encoders import load_prompt_encoders, resolve_device
from medm2g.core.training.latent_diffusion import load_denoiser
from medm2g.core.training.layout import RunLayout
from medm2g.registry import ModalityRegistry


@attrs.define(eq=False)
class TrainedRun:
    """Models of a run folder on ``device``, each loaded once, all in eval mode without gradients."""

    registry: ModalityRegistry
    config: RunConfig
    layout: RunLayout
    device: torch.device

    @classmethod
    def open(cls, run_dir: Path | str, registry: ModalityRegistry, device: str | None = None) -> "TrainedRun":
        layout = RunLayout(run_dir)
        if not layout.config.is_file():
            raise CheckpointError(f"{layout.config}: not found; {layout.root} is not a medm2g run folder "
                                  f"(make one with `medm2g train GRAPH --out {layout.root}`)")
        config = load_run_config(layout.config)
        if device is not None:
            config = with_overrides(config, device=device)
        return cls(config.modalities(registry), config, layout, resolve_device(config.device))

    def _ready(self, module: nn.Module) -> nn.Module:
        return module.to(self.device).eval().requires_grad_(False)

    @functools.cache
    def encoder(self, modality: str) -> nn.Module:
        """C_M: maps a batch of M's samples into the aligned space."""
        return self._ready(load_prompt_encoders(self.registry, [modality], self.config, self.layout)[modality])

    @functools.cache
    def vae(self, modality: str) -> nn.Module:
        return self._ready(load_vae(self.registry, modality, self.config, self.layout))

    @functools.cache
    def denoiser(self, modality: str) -> nn.Module:
        """M's single-modality LDM denoiser, as its LDM stage left it."""
        denoiser = self._ready(load_denoiser(self.registry, modality, self.config, self.layout))
        configure_attention(denoiser, self.config.attention, self.device)
        return denoiser

    @functools.cache
    def cross_guided(self, modality: str) -> CrossGuidedSide:
        """M's denoiser with theta_c attached, and V_M, f_M, as its multi-flow round left them."""
        side = self._ready(build_side(self.registry, modality, self.config, self.layout, load_trained=True))
        configure_attention(side.denoiser, self.config.attention, self.device)
        return side

    def translatable(self) -> list[tuple[str, str]]:
        """(source, target) of every direction a trained translation edge (SynDiff) can do."""
        return [direction for a, b in self.layout.translations()
                if a in self.registry and b in self.registry for direction in ((a, b), (b, a))]

    def generatable(self) -> list[str]:
        """Modalities whose VAE and denoiser this run has: the possible outputs."""
        return [m for m in self.registry if self.layout.vae(m).is_file() and self.layout.denoiser(m).is_file()]

    def conditionable(self) -> list[str]:
        """Modalities with an aligned encoder: the possible conditions."""
        return [m for m in self.registry if self.layout.encoder(m).is_file()]

    def jointly_generatable(self) -> list[str]:
        """Modalities with cross-guided parts from a round: those joint generation can sample together."""
        return [m for m in self.generatable() if self.layout.cross_guided(m).is_file()]
