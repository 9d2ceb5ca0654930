"""The MRI modality plugin.

MR signal has no absolute scale, so each volume is normalised by its own 0.5th
and 99.5th percentiles. The views add a smooth receive-coil bias field, a gamma
change of contrast, a small pose change and noise: what varies between scanners
and sessions without changing the anatomy.
"""

from medm2g.core.data.augmentations import BiasField, Compose, Gamma, GaussianNoise, SmallAffine
from medm2g.core.io.imaging import IMAGING_SUFFIXES
from medm2g.plugins.imaging import ImagingModalityPlugin
from medm2g.plugins.mri.phantom import render
from medm2g.registry import IntensityConvention, ModalitySpec

SPEC = ModalitySpec(
    name="mri",
    kind="volume",
    description="Magnetic resonance imaging, axial slices, per-volume normalised",
    channels=1,
    image_size=(64, 64),
    latent_shape=(4, 16, 16),
    size_grids={"paper": {"image_size": (256, 256), "latent_shape": (4, 64, 64)}},  # the paper's (section 4)
    intensity=IntensityConvention(
        unit="a.u.", window=(0.5, 99.5), per_sample=True, description="percentile window of each volume"
    ),
    file_suffixes=IMAGING_SUFFIXES,
    dicom_modalities=("MR",),
)

plugin = ImagingModalityPlugin(
    spec=SPEC,
    view_augmentation=Compose(
        [BiasField(strength=0.3), Gamma(range=(0.7, 1.5)), SmallAffine(degrees=5, scale=0.05, translate=0.03),
         GaussianNoise(0.02)]
    ),
    phantom=render,
)
