"""The CT modality plugin.

Intensities are Hounsfield units windowed to [-1000, 1000] HU (air to dense bone)
before mapping to [-1, 1], so air is -1 and water 0. The visual-invariant views
jitter the window slightly (scanner calibration), move the patient a little and
add quantum noise; CT is never flipped, since laterality is clinical information.
"""

import attrs

from medm2g.core.data.augmentations import Compose, GaussianNoise, IntensityJitter, SmallAffine
from medm2g.core.io.imaging import IMAGING_SUFFIXES
from medm2g.plugins.ct.phantom import render
from medm2g.plugins.imaging import ImagingModalityPlugin
from medm2g.registry import IntensityConvention, ModalitySpec

WINDOW_PRESETS = {
    "brain": (0.0, 80.0),  # level 40, width 80
    "subdural": (-100.0, 200.0),  # level 50, width 300
    "soft_tissue": (-160.0, 240.0),  # level 40, width 400
    "lung": (-1350.0, 150.0),  # level -600, width 1500
    "bone": (-500.0, 1300.0),  # level 400, width 1800
}
"""Common CT windows (low, high) in HU, as radiology workstations define them."""

SPEC = ModalitySpec(
    name="ct",
    kind="volume",
    description="Computed tomography, axial slices in Hounsfield units",
    channels=1,
    image_size=(64, 64),
    latent_shape=(4, 16, 16),
    size_grids={"paper": {"image_size": (256, 256), "latent_shape": (4, 64, 64)}},  # the paper's (section 4)
    intensity=IntensityConvention(
        unit="HU", window=(-1000, 1000), description="air -1000 HU, water 0 HU",
        display_window=(-20, 100),  # a brain window (level 40, width 120): grey/white matter and lesions
        display_presets={name: WINDOW_PRESETS[name] for name in ("brain", "subdural", "bone")},  # a reader's three
    ),
    file_suffixes=IMAGING_SUFFIXES,
    dicom_modalities=("CT",),
)

plugin = ImagingModalityPlugin(
    spec=SPEC,
    view_augmentation=Compose(
        [IntensityJitter(scale=0.05, shift=0.03), SmallAffine(degrees=5, scale=0.05, translate=0.03), GaussianNoise(0.03)]
    ),
    phantom=render,
)


def with_window(spec: ModalitySpec, preset: str) -> ModalitySpec:
    """The CT spec mapping ``preset``'s HU range onto [-1, 1] instead of the default
    (-1000, 1000): pass it to the hooks to train or read in, say, a brain window."""
    try:
        window = WINDOW_PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown CT window {preset!r} (presets: {', '.join(WINDOW_PRESETS)})") from None
    return attrs.evolve(spec, intensity=spec.intensity.with_window(window))
