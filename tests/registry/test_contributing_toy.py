"""CONTRIBUTING.md's plugin guide cannot drift from the code: its toy plugin, packaged with its
``pyproject.toml``, installs and passes the conformance checks; its phantom renderer runs.

The toy is installed as a real distribution (pip, no network, no build isolation) into a
folder of its own and found through the ``medm2g`` entry-point group by a pytest run in a
subprocess, as a plugin author's own tests would find it.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from medm2g.registry.conformance import ModalityConformance

ROOT = Path(__file__).parents[2]
GUIDE = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def section(heading: str) -> str:
    """The text of the ``###`` section whose title starts with ``heading``."""
    match = re.search(rf"^### {re.escape(heading)}.*?$(.*?)(?=^##)", GUIDE, flags=re.MULTILINE | re.DOTALL)
    assert match, f"CONTRIBUTING.md has no section '### {heading}'"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory):
    """The toy module and the guide's pyproject.toml, pip-installed into a folder of their own."""
    toy = section("1. A one-file toy modality")
    (module_name,) = re.findall(r"Save as `(\w+)\.py`", toy)
    module, snippet = code_blocks(toy, "python")[:2]
    (pyproject,) = code_blocks(section("2. Packaging it"), "toml")
    work = tmp_path_factory.mktemp("toy")
    source = work / "source"
    source.mkdir()
    (source / f"{module_name}.py").write_text(module)
    (source / "pyproject.toml").write_text(pyproject)
    site = work / "site"
    installed = subprocess.run([*PIP, "install", "--no-deps", "--no-build-isolation", "-q", "--target", str(site),
                                str(source)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return work, site, snippet


@pytest.mark.slow
def test_the_guides_toy_plugin_installs_and_passes_conformance(toy_site):
    work, site, snippet = toy_site
    tests = work / "tests"
    tests.mkdir()
    (tests / "test_toy.py").write_text(textwrap.dedent('''\
        from medm2g.registry import load_modalities
        from medm2g.registry.conformance import ModalityConformance


        class TestToyConformance(ModalityConformance):
            modality_name = "thermal"


        def test_the_toy_arrives_through_its_entry_point():
            assert load_modalities()["thermal"].source.distribution == "medm2g-thermal"


        def test_a_written_file_carries_its_provenance(tmp_path):
            import torch

            from medm2g.core.io.inspect_file import inspect_file
            from medm2g.core.io.provenance import Provenance

            provenance = Provenance(model="conformance", seed=7, created="")
            written = load_modalities()["thermal"].write(torch.zeros(1, 32, 32), tmp_path / "x.npy", provenance)
            assert inspect_file(written).provenance == provenance


        def test_the_guides_snippet_runs():
            namespace = {}
            exec(SNIPPET, namespace)
            assert namespace["encoder"] is not None
        ''') + f"\n\nSNIPPET = {snippet!r}\n")
    environment = {"OMP_WAIT_POLICY": "PASSIVE",  # waiting threads sleep beside a busy neighbour (core/threads.py)
                   **os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                            cwd=work, env=environment, capture_output=True, text=True, timeout=600)
    checks = [name for name, _ in inspect.getmembers(ModalityConformance, inspect.isfunction) if name.startswith("test_")]
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"{len(checks) + 3} passed" in result.stdout, result.stdout[-2000:]  # no check skipped
    assert "skipped" not in result.stdout


class StubSubject:
    """A phantom subject without the anatomy template: random tissue fractions on any grid."""

    def __init__(self, kind: str):
        from medm2g.core.phantom.anatomy import Finding

        self.finding = Finding(kind) if kind == "normal" else Finding(kind, "left", "frontal", 30.0, (20.0, 30.0, 20.0))

    def fractions(self, grid) -> torch.Tensor:
        from medm2g.core.phantom.anatomy import TISSUES

        shape = (len(TISSUES), len(grid.z), len(grid.y), len(grid.x))
        return torch.rand(shape, generator=torch.Generator().manual_seed(0)).softmax(0)


@pytest.mark.parametrize("kind", ["tumour", "normal"])
def test_the_guides_phantom_renderer_gives_a_rendering_in_the_samples_geometry(kind):
    from medm2g.registry import IntensityConvention, ModalitySpec, PhantomRendering

    (renderer,) = code_blocks(section("4. Taking part in the phantom cohort"), "python")
    module = types.ModuleType("guide_phantom")
    exec(renderer, module.__dict__)
    spec = ModalitySpec(name="pet", kind="volume", description="PET", channels=1, image_size=(32, 32),
                        latent_shape=(4, 8, 8), intensity=IntensityConvention(unit="SUV", window=(0, 10)))
    rendering = module.render(spec, StubSubject(kind), torch.Generator().manual_seed(1))
    assert isinstance(rendering, PhantomRendering)
    (sample,) = rendering.samples.values()
    assert sample.shape[1:] == (1, 32, 32) and rendering.lesion_mask.shape == (sample.shape[0], 1, 32, 32)
    assert sample.min() >= -1 and sample.max() <= 1
