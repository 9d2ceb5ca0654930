"""MRI of the phantom head: spin-echo signal from relaxation times, three contrasts.

Signal of one tissue (spin echo, TR >> TE): S = PD * (1 - exp(-TR/T1)) * exp(-TE/T2),
summed over a voxel's tissues (partial volume), then Rician noise (the magnitude of
complex Gaussian noise) at 2% of the brightest tissue signal.

Relaxation times are typical 1.5 T values from the MR physics literature (T1/T2 in
ms: white matter 650/75, grey matter 1100/95, CSF 4000/2000, fat-rich scalp
260/80); the skull's cortical bone has almost no signal. Lesions: subacute
haemorrhage (methaemoglobin) shortens T1 (bright on T1w), infarct oedema and tumour
lengthen T2 (bright on T2w), calcification is dark on every contrast.

Sequences (TR/TE ms): T1-weighted 500/15, T2-weighted 4000/100, PD-weighted 4000/15.
"""

from __future__ import annotations

import numpy as np
import torch

from medm2g.core.io.imaging import window_to_model
from medm2g.core.phantom.anatomy import SLICE_BAND_Z, SamplingGrid
from medm2g.core.phantom.physics import lesion_mask, lesion_value, property_map
from medm2g.registry import ModalitySpec, PhantomRendering

PHANTOM_SLICES = 16

# tissue: (T1 ms, T2 ms, proton density relative to CSF)
RELAXATION = {
    "air": (1.0, 1.0, 0.0),
    "csf": (4000.0, 2000.0, 1.0),
    "gm": (1100.0, 95.0, 0.82),
    "wm": (650.0, 75.0, 0.70),
    "bone": (1000.0, 1.0, 0.05),
    "soft_tissue": (260.0, 80.0, 0.90),
}
LESION_RELAXATION = {
    "haemorrhage": (450.0, 110.0, 0.85),
    "infarct": (1400.0, 200.0, 0.90),
    "tumour": (1300.0, 170.0, 0.88),
    "calcification": (800.0, 15.0, 0.30),
}
SEQUENCES = {"t1": (500.0, 15.0), "t2": (4000.0, 100.0), "pd": (4000.0, 15.0)}  # (TR, TE) in ms
NOISE_FRACTION = 0.02


def spin_echo(t1: float, t2: float, pd: float, tr: float, te: float) -> float:
    return float(pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2))


def render(spec: ModalitySpec, subject, generator: torch.Generator) -> PhantomRendering:
    fractions = subject.fractions(SamplingGrid.regular(spec.image_size, PHANTOM_SLICES, SLICE_BAND_Z))
    samples = {}
    for name, (tr, te) in SEQUENCES.items():
        table = {tissue: spin_echo(*times, tr, te) for tissue, times in RELAXATION.items()}
        lesion = {kind: spin_echo(*times, tr, te) for kind, times in LESION_RELAXATION.items()}
        signal = property_map(fractions, table, lesion_value(lesion, subject.finding))
        sigma = NOISE_FRACTION * max(table.values())
        real = signal + sigma * torch.randn(signal.shape, generator=generator)
        imaginary = sigma * torch.randn(signal.shape, generator=generator)
        magnitude = torch.sqrt(real**2 + imaginary**2)
        samples[name] = torch.from_numpy(window_to_model(magnitude.numpy().astype(np.float32), spec.intensity))[:, None]
    return PhantomRendering(samples, lesion_mask(fractions)[:, None])
