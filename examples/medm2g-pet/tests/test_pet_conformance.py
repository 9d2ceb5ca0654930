"""Run medm2g's conformance checks on the PET plugin: what every plugin author does."""

import torch
from medm2g_pet.counts import CountNoise

from medm2g.registry import load_modalities
from medm2g.registry.conformance import ModalityConformance


class TestPetConformance(ModalityConformance):
    modality_name = "pet"


def test_pet_is_registered_by_its_own_distribution():
    pet = load_modalities()["pet"]
    assert pet.source.distribution == "medm2g-pet"
    assert pet.spec.intensity.unit == "SUV"


def test_lower_dose_gives_noisier_views():
    flat = torch.zeros(64, 1, 32, 32)
    generator = torch.Generator().manual_seed(0)
    low_dose = CountNoise(counts=(5, 5))(flat, generator)
    high_dose = CountNoise(counts=(500, 500))(flat, generator)
    assert low_dose.std() > 3 * high_dose.std()
