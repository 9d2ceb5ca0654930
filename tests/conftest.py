"""Shared fixtures. Plugins made in a test are registered for that test alone."""

from __future__ import annotations

import pytest

from medm2g.registry import load_modalities


@pytest.fixture(scope="session")
def installed():
    """The registry of every installed modality (built-in and entry-point plugins)."""
    return load_modalities()
