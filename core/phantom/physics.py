"""Helpers every phantom renderer shares: mixing tissue properties and lesion masks.

Tissue properties mix linearly with the tissue fractions of a voxel (partial
volume): attenuation and proton density are additive over the voxel's content.
"""

from __future__ import annotations

from typing import Mapping

import torch

from medm2g.core.phantom.anatomy import TISSUES, Finding

LESION_MASK_THRESHOLD = 0.5
"""A voxel belongs to the lesion when at least half of it is lesion tissue."""


def property_map(fractions: torch.Tensor, values: Mapping[str, float], lesion_value: float) -> torch.Tensor:
    """Sum of fraction x value over tissues; the lesion channel takes ``lesion_value``."""
    table = torch.tensor([lesion_value if t == "lesion" else values[t] for t in TISSUES], dtype=fractions.dtype)
    return torch.einsum("k,k...->...", table, fractions)


def lesion_mask(fractions: torch.Tensor) -> torch.Tensor:
    """1 where a voxel is mostly lesion, shaped like one tissue channel."""
    return (fractions[TISSUES.index("lesion")] >= LESION_MASK_THRESHOLD).to(torch.uint8)


def lesion_value(table: Mapping[str, float], finding: Finding) -> float:
    """The property of the finding's tissue (0 when the subject is normal: no lesion voxels)."""
    return 0.0 if finding.is_normal else table[finding.kind]
