"""Modality-specific reading: CT window presets, reports from DICOM SR."""

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from medm2g.core.errors import DataError
from medm2g.core.io.dicom_read import read_dicom_file
from medm2g.plugins.ct.plugin import WINDOW_PRESETS, with_window


def test_a_brain_window_maps_0_to_80_hu_onto_the_model_range(installed):
    from medm2g.core.io.imaging import read_imaging

    spec = with_window(installed["ct"].spec, "brain")
    assert spec.intensity.window == WINDOW_PRESETS["brain"]
    path = Path(get_testdata_file("CT_small.dcm"))
    hounsfield = read_dicom_file(path, spec).values[0]
    model = read_imaging(path, spec)[0, 0]
    assert model.min() == -1 and model.max() == 1
    assert ((hounsfield > 0) & (hounsfield < 80)).any()
    with pytest.raises(ValueError, match="unknown CT window 'brian' \\(presets: brain, subdural"):
        with_window(installed["ct"].spec, "brian")


@pytest.mark.parametrize("name", ["reportsi.dcm", "test-SR.dcm"])
def test_reports_are_read_from_structured_reports(installed, name):
    text = installed["text"].read(Path(get_testdata_file(name)))
    assert isinstance(text, str) and len(text) > 20 and "\n" not in text


def test_an_image_dicom_is_not_a_report(installed):
    with pytest.raises(DataError, match="DICOM Modality is CT, not SR"):
        installed["text"].read(Path(get_testdata_file("CT_small.dcm")))
