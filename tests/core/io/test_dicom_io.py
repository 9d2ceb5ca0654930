"""Real DICOM no one here made: pydicom's test files and the pydicom-data package.

Every file either loads with the right shape and value range through the plugin its
DICOM Modality calls for, or gives a one-line DataError naming it; none crashes.
"""

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files

from medm2g.core.errors import DataError
from medm2g.core.io.dicom_read import read_dicom_file, read_dicom_series

PLUGIN_FOR = {"CT": "ct", "MR": "mri", "CR": "xray", "DX": "xray"}
NOT_DICOM = (".json", ".xml", ".txt", ".py", ".bz2", ".gz", ".zip", ".png", ".jpg", ".j2k", ".jls")


def dicom_modality(path: Path) -> str:
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, force=True).get("Modality", ""))
    except Exception:
        return ""


@pytest.fixture(scope="module")
def real_files():
    files = [Path(f) for f in get_testdata_files() if not f.lower().endswith(NOT_DICOM) and Path(f).is_file()]
    assert len(files) > 150, "pydicom's test files and pydicom-data should both be installed"
    return files


def test_every_real_file_loads_or_fails_with_one_line_naming_it(real_files, installed):
    loaded: dict[str, int] = {}
    warnings.simplefilter("ignore")
    for path in real_files:
        found = dicom_modality(path)
        plugin = installed[PLUGIN_FOR.get(found, "ct")]
        try:
            sample = plugin.read(path)
        except DataError as error:
            message = str(error)
            assert message.startswith(str(path)) and "\n" not in message, message
            continue
        assert tuple(sample.shape[-3:]) == (1, 64, 64), (path.name, tuple(sample.shape))
        assert sample.ndim == (3 if plugin.spec.kind.value == "image" else 4)
        assert sample.min() >= -1 and sample.max() <= 1 and np.isfinite(sample.numpy()).all()
        assert found in plugin.spec.dicom_modalities
        loaded[found] = loaded.get(found, 0) + 1
    assert loaded.get("CT", 0) >= 10 and loaded.get("MR", 0) >= 10 and loaded.get("CR", 0) >= 3, loaded


def test_ct_hounsfield_units_of_air_and_water(installed):
    pixels = read_dicom_file(Path(get_testdata_file("CT_small.dcm")), installed["ct"].spec)
    hounsfield = pixels.values[0]
    assert hounsfield[:8, :8].mean() < -700  # air around the patient
    assert -50 < np.median(hounsfield) < 100  # soft tissue, water-like
    assert pixels.spacing_mm == pytest.approx((0.661468, 0.661468))


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_compressed_transfer_syntaxes_decode_to_the_uncompressed_values(installed, name):
    reference = read_dicom_file(Path(get_testdata_file("MR_small.dcm")), installed["mri"].spec).values
    compressed = read_dicom_file(Path(get_testdata_file(name)), installed["mri"].spec).values
    assert np.array_equal(reference, compressed)


def test_jpeg_2000_decodes(installed):
    pixels = read_dicom_file(Path(get_testdata_file("MR2_J2KR.dcm")), installed["mri"].spec)
    assert pixels.values.shape == (1, 1024, 1024) and pixels.values.max() > 1000


def test_monochrome1_is_inverted_so_bright_means_attenuating(installed):
    path = Path(get_testdata_file("RG1_J2KR.dcm"))
    dataset = pydicom.dcmread(path)
    assert dataset.PhotometricInterpretation == "MONOCHROME1"
    pixels = read_dicom_file(path, installed["xray"].spec).values[0]
    raw = dataset.pixel_array.astype(np.float64)
    assert np.corrcoef(pixels.ravel()[::97], raw.ravel()[::97])[0, 1] < -0.9


def test_multi_frame_files_are_volumes(installed):
    volume = installed["mri"].read(Path(get_testdata_file("emri_small.dcm")))
    assert volume.shape == (10, 1, 64, 64)


def test_a_series_folder_is_a_volume_in_slice_order(installed):
    folder = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "77654033" / "CT2"
    pixels = read_dicom_series(folder, installed["ct"].spec)
    files = [pydicom.dcmread(p, stop_before_pixels=True) for p in folder.iterdir()]
    assert pixels.values.shape[0] == len(files)
    normal = np.cross(*np.split(np.array(files[0].ImageOrientationPatient, dtype=float), 2))
    positions = sorted(float(np.dot(f.ImagePositionPatient, normal)) for f in files)
    first = min(files, key=lambda f: float(np.dot(f.ImagePositionPatient, normal)))
    assert np.array_equal(pixels.values[0], read_dicom_file(Path(first.filename), installed["ct"].spec).values[0])
    assert positions == sorted(positions)
    assert installed["ct"].read(folder).shape == (len(files), 1, 64, 64)


def test_a_folder_with_several_series_is_refused(installed):
    folder = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "77654033"
    with pytest.raises(DataError, match="folder holds no DICOM files|holds .* series"):
        installed["ct"].read(folder)


@pytest.mark.parametrize(("name", "plugin", "expected"), [
    ("no_meta.dcm", "ct", "missing its meta header"),
    ("rtplan.dcm", "ct", "DICOM Modality is RTPLAN, not one ct reads \\(CT\\)"),
    ("US1_J2KR.dcm", "xray", "DICOM Modality is US, not one xray reads"),
    ("MR_small.dcm", "ct", "DICOM Modality is MR, not one ct reads"),
])
def test_unusable_files_say_why(installed, name, plugin, expected):
    path = get_testdata_file(name)
    with pytest.raises(DataError, match=expected):
        installed[plugin].read(Path(path))


def test_missing_and_truncated_pixel_data(tmp_path, installed):
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del dataset.PixelData
    dataset.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(DataError, match="nopixels.dcm: DICOM file has no pixel data"):
        installed["ct"].read(tmp_path / "nopixels.dcm")
    whole = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(whole[: len(whole) - 9000])
    with pytest.raises(DataError, match="truncated.dcm: (cannot decode pixel data|unreadable DICOM)"):
        installed["ct"].read(tmp_path / "truncated.dcm")


def test_dicom_without_a_suffix_is_recognised(tmp_path, installed):
    target = tmp_path / "IM000001"
    target.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    assert installed["ct"].read(target).shape == (1, 1, 64, 64)
