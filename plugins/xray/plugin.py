"""The X-ray modality plugin.

Detector values differ between devices, so each radiograph is normalised by its
own 0.5th and 99.5th percentiles (after MONOCHROME1 inversion). The views change
contrast and brightness (exposure), rotate by at most 3 degrees and add noise.
They never flip left and right: reports state laterality ("left lower lobe").
"""

from medm2g.core.data.augmentations import Compose, Contrast, GaussianNoise, IntensityJitter, SmallAffine
from medm2g.core.io.imaging import IMAGING_SUFFIXES
from medm2g.plugins.imaging import ImagingModalityPlugin
from medm2g.plugins.xray.phantom import render
from medm2g.registry import IntensityConvention, ModalitySpec

SPEC = ModalitySpec(
    name="xray",
    kind="image",
    description="Projection radiograph (chest X-ray), per-image normalised",
    channels=1,
    image_size=(64, 64),
    latent_shape=(4, 16, 16),
    size_grids={"paper": {"image_size": (256, 256), "latent_shape": (4, 64, 64)}},  # the paper's (section 4)
    intensity=IntensityConvention(
        unit="detector value", window=(0.5, 99.5), per_sample=True, description="percentile window of each image"
    ),
    file_suffixes=IMAGING_SUFFIXES,
    dicom_modalities=("CR", "DX", "RG"),
)

plugin = ImagingModalityPlugin(
    spec=SPEC,
    view_augmentation=Compose(
        [Contrast(range=(0.8, 1.25)), IntensityJitter(scale=0.05, shift=0.05),
         SmallAffine(degrees=3, scale=0.04, translate=0.02, horizontal_flip=0.0), GaussianNoise(0.02)]
    ),
    phantom=render,
)
