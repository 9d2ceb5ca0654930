"""Every installed modality, built-in or third-party, passes the same conformance checks."""

import pytest

from medm2g.registry import load_modalities
from medm2g.registry.conformance import ModalityConformance


class TestEveryInstalledModality(ModalityConformance):
    @pytest.fixture(scope="class", params=sorted(load_modalities()))
    @classmethod
    def modality(cls, request):
        return load_modalities()[request.param]
