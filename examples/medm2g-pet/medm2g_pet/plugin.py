"""The PET modality: FDG-PET volumes in standardised uptake values (SUV).

The spec says what medm2g may know about PET; the generic imaging plugin turns
it into every hook, and only the augmentation is PET-specific.
"""

from medm2g.core.data.augmentations import Compose, IntensityJitter, SmallAffine
from medm2g.core.io.imaging import IMAGING_SUFFIXES
from medm2g.plugins.imaging import ImagingModalityPlugin
from medm2g.registry import IntensityConvention, ModalitySpec
from medm2g_pet.counts import CountNoise

SPEC = ModalitySpec(
    name="pet",
    kind="volume",
    description="FDG positron emission tomography in SUV",
    channels=1,
    image_size=(64, 64),
    latent_shape=(4, 16, 16),
    size_grids={"paper": {"image_size": (256, 256), "latent_shape": (4, 64, 64)}},  # --size paper
    intensity=IntensityConvention(unit="SUV", window=(0, 10), description="SUV 0 (background) to 10 (avid lesion)"),
    file_suffixes=IMAGING_SUFFIXES,
    dicom_modalities=("PT",),
)

plugin = ImagingModalityPlugin(
    spec=SPEC,
    view_augmentation=Compose([CountNoise(counts=(20, 200)), IntensityJitter(scale=0.05, shift=0.0),
                               SmallAffine(degrees=5, scale=0.05, translate=0.03)]),
)
