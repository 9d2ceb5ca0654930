"""Imaging files in and out: orientation, aspect, quantisation and clear errors."""

import nibabel
import numpy as np
import pytest
import torch
from PIL import Image

from medm2g.core.errors import DataError
from medm2g.core.io.imaging import pad_to_aspect, read_imaging, write_imaging


def blob_volume(affine: np.ndarray) -> nibabel.Nifti1Image:
    """A bright blob at the patient's right-anterior (RAS x = +30 mm, y = +40 mm), whatever the affine says."""
    shape = (64, 64, 8)
    data = np.zeros(shape, dtype=np.float32)
    inverse = np.linalg.inv(affine)
    i, j, k = np.round(inverse[:3, :3] @ np.array([30.0, 40.0, 0.0]) + inverse[:3, 3]).astype(int)
    data[i - 2:i + 3, j - 2:j + 3, :] = 1000.0
    return nibabel.Nifti1Image(data, affine)


@pytest.mark.parametrize("orientation", ["RAS", "LPS"])
def test_nifti_in_any_orientation_comes_out_radiological(tmp_path, installed, orientation):
    signs = {"RAS": (1, 1), "LPS": (-1, -1)}[orientation]
    affine = np.diag([signs[0] * 3.0, signs[1] * 3.0, 5.0, 1.0])
    affine[:3, 3] = [-signs[0] * 96.0, -signs[1] * 96.0, -20.0]
    path = tmp_path / f"{orientation}.nii.gz"
    nibabel.save(blob_volume(affine), str(path))
    volume = installed["ct"].read(path)[:, 0]
    rows, columns = np.argwhere(volume[4].numpy() > 0).mean(0)
    assert columns < 32, "the patient's right must be on the image's left"
    assert rows < 32, "anterior must be at the top"


def test_medm2g_nifti_says_its_orientation_and_round_trips(tmp_path, installed):
    sample = -torch.ones(3, 1, 64, 64)
    sample[:, :, 10:14, 5:9] = 0.5  # top-left: the patient's right, anterior
    path = installed["ct"].write(sample, tmp_path / "ct.nii.gz")
    image = nibabel.as_closest_canonical(nibabel.load(str(path)))
    data = np.asarray(image.dataobj)
    x, y, _ = np.argwhere(data > 0).mean(0)
    assert x > data.shape[0] / 2 and y > data.shape[1] / 2  # RAS: right and anterior
    assert torch.allclose(installed["ct"].read(path), sample, atol=1e-3)


def test_ct_is_stored_in_whole_hounsfield_units(tmp_path, installed):
    path = installed["ct"].write(torch.linspace(-1, 1, 64 * 64).reshape(1, 1, 64, 64), tmp_path / "ct.nii.gz")
    image = nibabel.load(str(path))
    assert image.get_data_dtype() == np.int16
    assert image.header.get_slope_inter() == (None, None)  # nibabel's way of saying: no scaling, raw HU


def test_a_wide_image_keeps_its_aspect(tmp_path, installed):
    wide = np.zeros((32, 64), dtype=np.uint8)
    wide[:, 28:36] = 255  # a vertical bar across the full height
    Image.fromarray(wide).save(tmp_path / "wide.png")
    image = installed["xray"].read(tmp_path / "wide.png")[0]
    bar_rows = np.argwhere(image.numpy() > 0)[:, 0]
    assert bar_rows.min() >= 15 and bar_rows.max() <= 48, "padding, not stretching, fills the grid"


def test_pad_to_aspect_uses_physical_spacing():
    slices = torch.zeros(1, 1, 50, 100)
    padded = pad_to_aspect(slices, (2.0, 1.0), (64, 64))  # 100 mm x 100 mm already square
    assert padded.shape[-2:] == (50, 100)
    assert pad_to_aspect(slices, None, (64, 64)).shape[-2:] == (100, 100)


def test_writing_an_unknown_format_is_refused(tmp_path, installed):
    with pytest.raises(DataError, match="cannot write .bmp for ct"):
        write_imaging(torch.zeros(1, 64, 64), tmp_path / "x.bmp", installed["ct"].spec)


def test_a_png_holds_one_slice(tmp_path, installed):
    with pytest.raises(DataError, match="a PNG holds one slice, the sample has 2"):
        installed["ct"].write(torch.zeros(2, 1, 64, 64), tmp_path / "x.png")


def test_missing_and_unsupported_files(tmp_path, installed):
    with pytest.raises(DataError, match="file not found"):
        read_imaging(tmp_path / "nothing.png", installed["ct"].spec)
    (tmp_path / "notes.docx").write_bytes(b"PK")
    with pytest.raises(DataError, match="unsupported file type .docx for ct"):
        installed["ct"].read(tmp_path / "notes.docx")
