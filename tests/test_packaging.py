"""Packaging: one import namespace, and third-party modalities arriving by entry point.

These tests build real distributions with pip (no network: no build isolation),
so they take several seconds each.
"""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def test_the_wheel_installs_only_the_medm2g_namespace(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".venv"))
    subprocess.run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("medm2g-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"medm2g", next(t for t in top_level if t.endswith(".dist-info"))}
    assert "medm2g/core/graph/engine.py" in names and "medm2g/registry/hookspecs.py" in names
    assert "medm2g/graphs/medm2g.yaml" in names and "medm2g/graphs/pair-graph.schema.json" in names
    assert "medm2g/plugins/text/vocabulary.txt" in names
    for folder in ("core", "registry", "plugins"):  # every source module ships (a new sub-package must be listed)
        for module in (ROOT / folder).rglob("*.py"):
            assert f"medm2g/{module.relative_to(ROOT).as_posix()}" in names, module
    assert not any(name.startswith(("medm2g/tests", "medm2g/examples")) for name in names)
    source_modules = {
        f"medm2g/{path.relative_to(ROOT).as_posix()}"
        for top in ("core", "registry", "plugins")
        for path in (ROOT / top).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert source_modules - set(names) == set()  # every sub-package is listed in pyproject


@pytest.fixture(scope="module")
def pet_site(tmp_path_factory):
    """medm2g-pet installed as its own distribution into a separate folder."""
    work = tmp_path_factory.mktemp("pet")
    source = work / "medm2g-pet"
    shutil.copytree(ROOT / "examples" / "medm2g-pet", source)
    site = work / "site"
    subprocess.run([*PIP, "install", "--no-deps", "--no-build-isolation", "-q", "--target", str(site), str(source)],
                   check=True, capture_output=True)
    return site, source


def run_with(site: Path, *command: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=cwd, timeout=600)


def test_pet_appears_in_modalities_from_its_own_distribution(pet_site):
    site, _ = pet_site
    result = run_with(site, sys.executable, "-m", "medm2g.core.apps.cli", "modalities")
    assert result.returncode == 0, result.stderr
    assert "pet  (volume)  provided by 'pet' from medm2g-pet 0.1.0" in result.stdout
    assert "intensity 0..10 (SUV) -> [-1, 1]" in result.stdout


def test_pet_takes_part_in_a_plan(pet_site, tmp_path):
    site, _ = pet_site
    graph = tmp_path / "pet.yaml"
    graph.write_text(
        "modalities: [text, ct, pet]\ncenter: text\n"
        "pairs:\n"
        "  - {a: text, b: ct, dataset: text-ct.csv}\n"
        "  - {a: ct, b: pet, dataset: ct-pet.csv}\n"
    )
    result = run_with(site, sys.executable, "-m", "medm2g.core.apps.cli", "plan", str(graph))
    assert result.returncode == 0, result.stderr
    assert "pet      aligns to ct       through ct (2 hops)" in result.stdout
    assert "Round 2 (#10) ct-pet: ct-pet.csv" in result.stdout
    assert "text -> pet  through text-ct-pet" in result.stdout


def test_the_pet_package_passes_medm2gs_conformance_checks(pet_site):
    site, source = pet_site
    result = run_with(site, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(source / "tests"),
                      cwd=source)
    assert result.returncode == 0, result.stdout[-3000:]
    from medm2g.registry.conformance import ModalityConformance

    checks = [name for name in dir(ModalityConformance) if name.startswith("test_")]
    own = (source / "tests" / "test_pet_conformance.py").read_text().count("\ndef test_")
    counts = dict((word, int(n)) for n, word in re.findall(r"(\d+) (passed|skipped|failed)", result.stdout))
    assert counts.get("passed", 0) + counts.get("skipped", 0) == len(checks) + own and "failed" not in counts
