"""The record every image reader returns before intensities are mapped to model space, and how
physical units are quantised for storage (shared by every writer)."""

from __future__ import annotations

import attrs
import numpy as np

from medm2g.registry.specs import IntensityConvention


@attrs.frozen
class Pixels:
    """Values (slices or frames, H, W) in physical units and the in-plane spacing (row, column)
    in millimetres; ``None`` when the file does not say (square pixels are assumed)."""

    values: np.ndarray
    spacing_mm: tuple[float, float] | None = None


PER_SAMPLE_LEVELS = 4095
"""Per-sample units are stored in 12 bits, as MR scanners store magnitude images."""


MIN_LEVELS_ACROSS_WINDOW = 2000
"""Physical units keep at least this many levels across the model window."""


def storage_range(intensity: IntensityConvention) -> tuple[float, float, float]:
    """(low, high, quantum) for storing units as integers, as scanners do.

    Physical units get the power-of-ten quantum giving at least 2000 levels across the
    window (1 HU for a 2000 HU CT window, 0.001 SUV for 0-10 SUV); per-sample [0, 1]
    units get 12 bits. Noise below a scanner's resolution only makes files bigger.
    """
    if intensity.per_sample:
        return 0.0, 1.0, 1.0 / PER_SAMPLE_LEVELS
    low, high = intensity.window
    return low, high, float(10.0 ** np.floor(np.log10((high - low) / MIN_LEVELS_ACROSS_WINDOW)))
