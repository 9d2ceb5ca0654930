"""The record every image reader returns before intensities are mapped to model space."""

from __future__ import annotations

import attrs
import numpy as np


@attrs.frozen
class Pixels:
    """Values (slices or frames, H, W) in physical units and the in-plane spacing (row, column)
    in millimetres; ``None`` when the file does not say (square pixels are assumed)."""

    values: np.ndarray
    spacing_mm: tuple[float, float] | None = None
