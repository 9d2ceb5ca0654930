"""Every installed modality, built-in or third-party, passes the same conformance checks."""

import pytest
import torch

from medm2g.core.errors import DataError
from medm2g.core.io.inspect_file import inspect_file
from medm2g.core.io.provenance import Provenance
from medm2g.registry import load_modalities
from medm2g.registry.conformance import REPORTS, ModalityConformance, example_batch

PROVENANCE = Provenance(model="conformance", source="tests/registry", seed=7, created="")


def formats_carrying_provenance(modality, folder) -> tuple[list[str], list[str]]:
    """The suffixes the modality writes, and those whose files ``medm2g inspect`` finds PROVENANCE in."""
    if not modality.spec.kind.is_imaging:
        sample, suffixes = REPORTS[0], modality.spec.file_suffixes
    else:
        sample, suffixes = example_batch(modality, batch=1)[0], modality.spec.file_suffixes
        if modality.spec.kind.value == "volume":
            sample = torch.stack([sample, sample])
    written, carrying = [], []
    for suffix in suffixes:
        try:
            path = modality.write(sample, folder / f"sample{suffix}", PROVENANCE)
        except DataError:
            continue
        written.append(suffix)
        if inspect_file(path).provenance == PROVENANCE:
            carrying.append(suffix)
    return written, carrying


class TestEveryInstalledModality(ModalityConformance):
    @pytest.fixture(scope="class", params=sorted(load_modalities()))
    @classmethod
    def modality(cls, request):
        return load_modalities()[request.param]

    def test_written_files_carry_their_provenance(self, modality, tmp_path):
        """A generated file says it is synthetic, and by what (``medm2g inspect``), in at least one
        format the modality writes. (Not among the shipped checks: ``medm2g.registry`` may not
        import ``core.io``, which imports it.)"""
        written, carrying = formats_carrying_provenance(modality, tmp_path)
        assert carrying, f"{modality.name} writes its provenance into none of {', '.join(written)}"
