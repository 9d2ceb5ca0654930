"""Fréchet distance between feature distributions of generated and real images, on features you name.

Inception FID needs ImageNet weights, which medm2g never downloads, and Inception
features of a 64-pixel CT slice mean little anyway. So the feature network is a choice
that every output names:

* by default the run's own aligned prompt encoder C_M of the target modality (its
  features are what the alignment taught it to find: findings, side, anatomy), labelled
  ``FID[medm2g C_<modality>]``;
* or any timm architecture with weights from a local safetensors file
  (``timm:resnet18:/models/radimagenet-resnet18.safetensors``), labelled with that name.

Numbers from different feature networks, or from different sample counts (the
estimate is biased upwards for few samples), are not comparable; none is Inception FID.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from medm2g.core.errors import CheckpointError, ConfigError
from medm2g.core.metrics.retrieval import embed

FeatureNetwork = Callable[[torch.Tensor], torch.Tensor]
"""(B, C, H, W) images in model space -> (B, D) features."""


class _Precomputed(torch.nn.Module):
    """torchmetrics' "feature network" for features already computed: the identity, D wide."""

    def __init__(self, width: int):
        super().__init__()
        self.num_features = width

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) of Gaussians fitted to (N, D) feature sets,
    computed by torchmetrics' ``FrechetInceptionDistance`` (in float64, through the eigenvalues of
    S_r S_f, so the singular covariances of small sample sets do not fail) on the features given:
    the maintained implementation, with the feature network this module chose."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1] or min(len(real), len(fake)) < 2:
        raise ValueError(f"need two (N>=2, D) feature sets of one width, got {real.shape} and {fake.shape}")
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), normalize=True)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    return float(metric.compute())


@torch.no_grad()
def features(network: FeatureNetwork, images: Sequence[torch.Tensor], device: torch.device) -> np.ndarray:
    """(N, D) float64 features of ``images`` (batched as retrieval embeds them)."""
    return embed(network, list(images), device, batch_size=32).flatten(1).double().numpy()


def timm_feature_network(spec: str, channels: int) -> tuple[FeatureNetwork, str]:
    """``timm:ARCHITECTURE:WEIGHTS.safetensors`` as a pooled-feature network and its label."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or parts[0] != "timm" or not parts[1] or not parts[2]:
        raise ConfigError(f"--fid-features {spec!r}: expected timm:ARCHITECTURE:/path/to/weights.safetensors")
    _, architecture, weights = parts
    path = Path(weights)
    if path.suffix != ".safetensors":
        raise ConfigError(f"--fid-features {spec!r}: weights must be a .safetensors file (nothing is unpickled)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file for the FID feature network")
    import timm
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        network = timm.create_model(architecture, pretrained=False, num_classes=0, in_chans=channels)
    except RuntimeError as error:  # timm: "Unknown model (...)"
        raise ConfigError(f"--fid-features {spec!r}: {error}") from None
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:  # a .safetensors name on something else (a renamed pickle, say)
        reason = " ".join(str(error).split())[:200]
        raise CheckpointError(f"{path}: not a safetensors file ({reason})") from None
    try:
        missing = network.load_state_dict(state, strict=False).missing_keys
    except RuntimeError as error:  # torch: "size mismatch for conv1.weight: ..."
        reason = " ".join(str(error).split())[:200]
        raise CheckpointError(f"{path}: not weights of timm {architecture}: {reason}") from None
    if missing:
        raise CheckpointError(f"{path}: not weights of timm {architecture}: missing {', '.join(missing[:4])}"
                              + (" ..." if len(missing) > 4 else ""))
    return network.eval().requires_grad_(False), f"FID[timm {architecture}, {path.name}]"
