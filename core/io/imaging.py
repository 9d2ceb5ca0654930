"""Read and write imaging files in model space: PNG/JPEG/TIFF, DICOM, NIfTI and .npy.

Model space is float32 on the spec's grid with intensities mapped to [-1, 1] by the
spec's :class:`~medm2g.registry.IntensityConvention`. PNG-like files hold display
values, mapped linearly from their full range; DICOM, NIfTI and .npy hold physical
units (HU after the DICOM modality LUT) and go through the window. Every failure is
a :class:`~medm2g.core.errors.DataError` naming the file and the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medm2g.core.errors import DataError
from medm2g.core.io.dicom_write import write_secondary_capture
from medm2g.core.io.pixels import Pixels, storage_range
from medm2g.core.io.provenance import NIFTI_EXTENSION_CODE, PNG_KEY, Provenance
from medm2g.registry.specs import IntensityConvention, ModalityKind, ModalitySpec

DISPLAY_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
IMAGING_SUFFIXES = DISPLAY_SUFFIXES + (".dcm", ".nii", ".nii.gz", ".npy")
WRITABLE_SUFFIXES = (".png", ".nii", ".nii.gz", ".dcm", ".npy")
"""What :func:`write_imaging` writes (it reads more: JPEG and TIFF come in, never go out)."""


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def window_to_model(values: np.ndarray, intensity: IntensityConvention) -> np.ndarray:
    """Physical units -> [-1, 1]: the fixed window, or each sample's own percentile window."""
    low, high = intensity.window
    if intensity.per_sample:
        low, high = np.percentile(values, [low, high])
        if high <= low:
            high = low + 1.0
    return (np.clip((values - low) / (high - low), 0.0, 1.0) * 2.0 - 1.0).astype(np.float32)


def model_to_window(values: np.ndarray, intensity: IntensityConvention) -> np.ndarray:
    """[-1, 1] -> physical units; per-sample conventions have no absolute scale and give [0, 1]."""
    unit = (np.clip(values, -1.0, 1.0) + 1.0) / 2.0
    if intensity.per_sample:
        return unit.astype(np.float32)
    low, high = intensity.window
    return (unit * (high - low) + low).astype(np.float32)


def quantise_like_a_scanner(values: np.ndarray, intensity: IntensityConvention) -> tuple[np.ndarray, float]:
    """Integers (zero at zero units, for NIfTI) and the slope that maps them back."""
    low, high, quantum = storage_range(intensity)
    dtype = np.uint16 if intensity.per_sample else np.int16
    return np.round(np.clip(values, low, high) / quantum).astype(dtype), quantum


def pad_to_aspect(slices: torch.Tensor, spacing_mm: tuple[float, float] | None, size: tuple[int, int]) -> torch.Tensor:
    """Pad (N, C, H, W) with the background value -1 so its physical extent has the grid's
    aspect ratio: resizing then keeps anatomy undistorted (a 2:1 radiograph stays 2:1)."""
    rows, columns = slices.shape[-2:]
    row_mm, column_mm = spacing_mm or (1.0, 1.0)
    height, width = rows * row_mm, columns * column_mm
    target = size[0] / size[1]
    if height / width < target:  # too wide: add rows
        extra = round(width * target / row_mm) - rows
        padding = (0, 0, extra // 2, extra - extra // 2)
    else:  # too tall: add columns
        extra = round(height / target / column_mm) - columns
        padding = (extra // 2, extra - extra // 2, 0, 0)
    return F.pad(slices, padding, value=-1.0) if max(padding) > 0 else slices


def resize_to_grid(slices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, *size), area-averaging when shrinking so thin structures survive."""
    if tuple(slices.shape[-2:]) == tuple(size):
        return slices
    shrinking = slices.shape[-2] >= size[0] and slices.shape[-1] >= size[1]
    mode = "area" if shrinking else "bilinear"
    return F.interpolate(slices, size=size, mode=mode, **({} if shrinking else {"align_corners": False}))


def _read_display(path: Path, spec: ModalitySpec) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB" if spec.channels == 3 else ("I" if image.mode.startswith("I") else "L"))
            array = np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: not a readable image: {error}") from None
    full_scale = 255.0 if array.max(initial=0) <= 255 else 65535.0
    array = array / full_scale * 2.0 - 1.0
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)  # (C, H, W)


def slices_to_nifti(slices: np.ndarray, spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)):
    """Model-space axial slices (D, H, W) -> a NIfTI image whose affine says what they are.

    Model space is radiological: rows run anterior to posterior, columns from the patient's
    right to left, slices inferior to superior. In RAS world coordinates that is
    x = -column, y = -row, z = +slice, so any viewer shows the anatomy the right way round.
    """
    import nibabel

    row_mm, column_mm, slice_mm = spacing_mm
    affine = np.diag([-column_mm, -row_mm, slice_mm, 1.0])
    return nibabel.Nifti1Image(np.ascontiguousarray(np.transpose(slices, (2, 1, 0))), affine)


def nifti_to_slices(image) -> tuple[np.ndarray, tuple[float, float]]:
    """Any NIfTI orientation -> model-space axial slices (D, H, W) and in-plane spacing (row, column)."""
    import nibabel

    canonical = nibabel.as_closest_canonical(image)  # RAS+: data[x, y, z]
    data = np.asarray(canonical.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise ValueError(f"expected a 2D or 3D volume, got shape {data.shape}")
    zooms = canonical.header.get_zooms()
    slices = np.transpose(data, (2, 1, 0))[:, ::-1, ::-1]  # (z, y, x) -> rows posterior-ward, columns leftward
    return np.ascontiguousarray(slices), (float(zooms[1]), float(zooms[0]))


def _read_nifti(path: Path, spec: ModalitySpec) -> Pixels:
    import nibabel

    try:
        slices, spacing = nifti_to_slices(nibabel.load(str(path)))
    except Exception as error:  # nibabel raises ImageFileError, EOFError, zlib errors, our ValueError
        raise DataError(f"{path}: not a readable NIfTI file: {error}") from None
    return Pixels(slices, spacing)


def _read_npy(path: Path, spec: ModalitySpec) -> Pixels:
    try:
        values = np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable .npy array: {error}") from None
    return Pixels(values)


def _read_dicom(path: Path, spec: ModalitySpec) -> Pixels:
    from medm2g.core.io.dicom_read import read_dicom_file

    return read_dicom_file(path, spec)


def _read_physical(path: Path, spec: ModalitySpec) -> Pixels:
    """Files holding physical units: DICOM (by suffix or by its 'DICM' marker), NIfTI, .npy,
    or a folder holding one DICOM series."""
    from medm2g.core.io.dicom_read import looks_like_dicom, read_dicom_series

    if path.is_dir():
        return read_dicom_series(path, spec)
    suffix = _suffix(path)
    readers = {".dcm": _read_dicom, ".nii": _read_nifti, ".nii.gz": _read_nifti, ".npy": _read_npy}
    if suffix in readers:
        return readers[suffix](path, spec)
    if looks_like_dicom(path):
        return _read_dicom(path, spec)
    raise DataError(f"{path}: unsupported file type {suffix or '(none)'} for {spec.name} "
                    f"(expected DICOM or one of {', '.join(IMAGING_SUFFIXES)})")


def read_imaging(path: Path, spec: ModalitySpec) -> torch.Tensor:
    """One file (or DICOM series folder) -> (C, H, W) for an image modality, (D, C, H, W) for a volume."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_file() and _suffix(path) in DISPLAY_SUFFIXES:
        slices, spacing = torch.from_numpy(_read_display(path, spec))[None], None
    else:
        pixels = _read_physical(path, spec)
        values = pixels.values[None] if pixels.values.ndim == 2 else pixels.values
        if values.ndim != 3:
            raise DataError(f"{path}: expected a 2D image or a stack of slices, got shape {values.shape}")
        slices, spacing = torch.from_numpy(window_to_model(values, spec.intensity))[:, None], pixels.spacing_mm
        if spec.channels != 1:
            slices = slices.expand(-1, spec.channels, -1, -1)
    slices = resize_to_grid(pad_to_aspect(slices.float(), spacing, spec.image_size), spec.image_size)
    if spec.kind is ModalityKind.IMAGE:
        if slices.shape[0] != 1:
            raise DataError(f"{path}: {spec.name} expects one 2D image, found {slices.shape[0]} slices/frames")
        return slices[0].contiguous()
    return slices.contiguous()


def write_imaging(sample: torch.Tensor, path: Path, spec: ModalitySpec, provenance: Provenance | None = None) -> Path:
    """Write (C, H, W) or (D, C, H, W) in [-1, 1]; the suffix picks PNG, NIfTI, DICOM or .npy.

    The provenance goes into the file (PNG text chunk, NIfTI extension, DICOM attributes).
    DICOM always carries the synthetic markers, with ``model`` "unspecified" when none is given.
    A volume of several slices written as ``.dcm`` becomes a series folder (the path without suffix).
    """
    path = Path(path)
    suffix = _suffix(path)
    array = sample.detach().float().cpu().numpy()
    slices = array[None] if array.ndim == 3 else array
    if slices.ndim != 4:
        raise DataError(f"{path}: expected a (C, H, W) or (D, C, H, W) sample, got shape {tuple(sample.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        if slices.shape[0] != 1:
            raise DataError(f"{path}: a PNG holds one slice, the sample has {slices.shape[0]}; write .nii.gz instead")
        from PIL import Image
        from PIL.PngImagePlugin import PngInfo

        pixels = np.round((np.clip(slices[0], -1, 1) + 1) * 127.5).astype(np.uint8)
        info = PngInfo()
        if provenance is not None:
            info.add_text(PNG_KEY, provenance.to_json())
        Image.fromarray(pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)).save(path, pnginfo=info)
    elif suffix in (".nii", ".nii.gz"):
        import nibabel

        stored, slope = quantise_like_a_scanner(model_to_window(slices[:, 0], spec.intensity), spec.intensity)
        image = slices_to_nifti(stored)
        image.header.set_slope_inter(slope, 0.0)
        if provenance is not None:
            image.header["descrip"] = b"medm2g synthetic"
            image.header.extensions.append(
                nibabel.nifti1.Nifti1Extension(NIFTI_EXTENSION_CODE, provenance.to_json().encode())
            )
        nibabel.save(image, str(path))
    elif suffix == ".dcm":
        units = model_to_window(slices[:, 0], spec.intensity)
        return write_secondary_capture(units, path, spec, provenance or Provenance(model="unspecified"))
    elif suffix == ".npy":
        np.save(path, model_to_window(slices[:, 0] if array.ndim == 4 else slices[0, 0], spec.intensity))
    else:
        raise DataError(f"{path}: cannot write {suffix or '(no suffix)'} for {spec.name} "
                        f"(use {', '.join(WRITABLE_SUFFIXES)})")
    return path
