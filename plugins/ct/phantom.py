"""CT of the phantom head: Hounsfield units per tissue, mixed by partial volume, plus noise.

Values are typical for non-contrast head CT (air -1000, CSF 0-15, white matter 20-30,
grey matter 35-45, acute haemorrhage 50-80, an enhancing tumour after contrast 60 or more,
calcification several hundred HU); the
skull saturates the [-1000, 1000] HU model window. Noise: 6 HU Gaussian, a
typical head CT standard deviation in brain tissue.
"""

from __future__ import annotations

import numpy as np
import torch

from medm2g.core.io.imaging import window_to_model
from medm2g.core.phantom.anatomy import SLICE_BAND_Z, SamplingGrid
from medm2g.core.phantom.physics import lesion_mask, lesion_value, property_map
from medm2g.registry import ModalitySpec, PhantomRendering

PHANTOM_SLICES = 16

HOUNSFIELD = {"air": -1000.0, "csf": 8.0, "gm": 40.0, "wm": 26.0, "bone": 1000.0, "soft_tissue": -40.0}
LESION_HOUNSFIELD = {"haemorrhage": 65.0, "infarct": 14.0, "tumour": 60.0, "calcification": 450.0}
NOISE_HU = 6.0


def render(spec: ModalitySpec, subject, generator: torch.Generator) -> PhantomRendering:
    fractions = subject.fractions(SamplingGrid.regular(spec.image_size, PHANTOM_SLICES, SLICE_BAND_Z))
    hounsfield = property_map(fractions, HOUNSFIELD, lesion_value(LESION_HOUNSFIELD, subject.finding))
    hounsfield = hounsfield + NOISE_HU * torch.randn(hounsfield.shape, generator=generator)
    model = torch.from_numpy(window_to_model(hounsfield.numpy().astype(np.float32), spec.intensity))
    return PhantomRendering({"ct": model[:, None]}, lesion_mask(fractions)[:, None])
