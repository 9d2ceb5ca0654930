"""Unpaired batches never pair a subject with itself, even from a paired manifest."""

import pytest
import torch

from medm2g.core.backends.syndiff.unpaired import UnpairedBatches
from medm2g.core.errors import DataError


def _records(modality: str, subjects: list[str]) -> list[dict]:
    return [{"subject_id": s, modality: torch.full((1, 4, 4), float(i))} for i, s in enumerate(subjects)]


def test_no_sample_holds_two_modalities_of_one_subject():
    subjects = [f"S{i}" for i in range(5)]  # a paired manifest: both modalities of the same five subjects
    batches = UnpairedBatches(_records("mri", subjects), _records("ct", subjects), "mri", "ct", seed=0)
    seen_pairs = set()
    for step in range(50):
        batch = batches(step, 8)
        assert batch["mri"].shape == (8, 1, 4, 4) and batch["ct"].shape == (8, 1, 4, 4)
        for a, b in zip(batch["subject_a"], batch["subject_b"]):
            assert a != b
            seen_pairs.add((a, b))
    assert len(seen_pairs) == 20  # every ordered pair of different subjects turns up
    torch.testing.assert_close(batches(7, 8)["ct"], batches(7, 8)["ct"])  # a function of (seed, step)


def test_a_dataset_of_one_subject_cannot_be_unpaired():
    with pytest.raises(DataError, match="every image is of one subject"):
        UnpairedBatches(_records("mri", ["S0"]), _records("ct", ["S0"]), "mri", "ct", seed=0)
    with pytest.raises(DataError, match="no ct images to draw from"):
        UnpairedBatches(_records("mri", ["S0"]), [], "mri", "ct", seed=0)
