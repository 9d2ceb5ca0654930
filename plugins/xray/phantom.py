"""A frontal (AP) skull radiograph of the phantom head by Beer-Lambert projection.

Each detector pixel sees I = I0 * exp(-sum(mu * dl)) along its ray through the head.
Linear attenuation coefficients (1/cm) at an effective energy of about 60 keV:
water and CSF 0.206, brain 0.21, scalp 0.19, skull (cortical bone) 0.57, fresh blood
0.215, calcification 0.45. Quantum noise: Poisson counts at I0 = 50000 per pixel.

A real skull radiograph barely shows a soft-tissue brain lesion (blood differs from
brain by about 2 %), so the lesion coefficients here are exaggerated on purpose: an
X-ray-report pair teaches nothing when the image cannot show the report's finding.
``CLINICAL_LESION_ATTENUATION_PER_CM`` keeps the physical values for reference.
The image is the log attenuation -ln(I / I0), bright where the body attenuates, as a
radiograph is displayed (MONOCHROME2); columns run from the patient's right to left.
"""

from __future__ import annotations

import numpy as np
import torch

from medm2g.core.io.imaging import window_to_model
from medm2g.core.phantom.anatomy import TISSUES, SamplingGrid
from medm2g.core.phantom.physics import LESION_MASK_THRESHOLD, lesion_value, property_map
from medm2g.registry import ModalitySpec, PhantomRendering

RAY_SAMPLES = 48  # 4 mm steps through a 192 mm head
ATTENUATION_PER_CM = {"air": 0.0, "csf": 0.206, "gm": 0.21, "wm": 0.21, "bone": 0.57, "soft_tissue": 0.19}
CLINICAL_LESION_ATTENUATION_PER_CM = {"haemorrhage": 0.215, "infarct": 0.205, "tumour": 0.212, "calcification": 0.45}
LESION_ATTENUATION_PER_CM = {"haemorrhage": 0.36, "infarct": 0.08, "tumour": 0.30, "calcification": 0.6}
"""What the phantom renders: visible contrasts of the same sign as the clinical ones."""
INCIDENT_PHOTONS = 50_000.0


def render(spec: ModalitySpec, subject, generator: torch.Generator) -> PhantomRendering:
    grid = SamplingGrid.frontal_projection(spec.image_size, RAY_SAMPLES)
    fractions = subject.fractions(grid)  # (K, z rows, y along the ray, x columns)
    mu = property_map(fractions, ATTENUATION_PER_CM, lesion_value(LESION_ATTENUATION_PER_CM, subject.finding))
    step_cm = grid.spacing_mm["y"] / 10.0
    line_integral = mu.sum(dim=1) * step_cm
    counts = torch.poisson(INCIDENT_PHOTONS * torch.exp(-line_integral), generator=generator)
    attenuation = -torch.log(counts.clamp(min=1.0) / INCIDENT_PHOTONS)
    model = torch.from_numpy(window_to_model(attenuation.numpy().astype(np.float32), spec.intensity))
    lesion_path_mm = fractions[TISSUES.index("lesion")].sum(dim=1) * grid.spacing_mm["y"]
    mask = (lesion_path_mm >= LESION_MASK_THRESHOLD * grid.spacing_mm["y"]).to(torch.uint8)
    return PhantomRendering({"xray": model[None]}, mask[None])
