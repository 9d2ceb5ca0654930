"""The CT modality plugin.

Intensities are Hounsfield units windowed to [-1000, 1000] HU (air to dense bone)
before mapping to [-1, 1], so air is -1 and water 0. The visual-invariant views
jitter the window slightly (scanner calibration), move the patient a little and
add quantum noise; CT is never flipped, since laterality is clinical information.
"""

from medm2g.core.augmentations import Compose, GaussianNoise, IntensityJitter, SmallAffine
from medm2g.core.imaging_io import IMAGING_SUFFIXES
from medm2g.plugins.imaging import ImagingModalityPlugin
from medm2g.plugins.ct.phantom import render
from medm2g.registry import IntensityConvention, ModalitySpec

SPEC = ModalitySpec(
    name="ct",
    kind="volume",
    description="Computed tomography, axial slices in Hounsfield units",
    channels=1,
    image_size=(64, 64),
    latent_shape=(4, 16, 16),
    intensity=IntensityConvention(
        unit="HU", window=(-1000, 1000), description="air -1000 HU, water 0 HU",
        display_window=(-20, 100),  # a brain window (level 40, width 120): grey/white matter and lesions
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
