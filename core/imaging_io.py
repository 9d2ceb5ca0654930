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
from medm2g.registry.specs import IntensityConvention, ModalityKind, ModalitySpec

DISPLAY_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
IMAGING_SUFFIXES = DISPLAY_SUFFIXES + (".dcm", ".nii", ".nii.gz", ".npy")


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


PER_SAMPLE_LEVELS = 4095
"""Per-sample units are stored in 12 bits, as MR scanners store magnitude images."""


MIN_LEVELS_ACROSS_WINDOW = 2000
"""Physical units keep at least this many levels across the model window."""


def quantise_like_a_scanner(values: np.ndarray, intensity: IntensityConvention) -> tuple[np.ndarray, float]:
    """Integers and the slope that maps them back.

    Physical units get the power-of-ten quantum giving at least 2000 levels across the
    window (1 HU for a 2000 HU CT window, 0.001 SUV for 0-10 SUV); per-sample [0, 1]
    units get 12 bits. Noise below a scanner's resolution only makes files bigger.
    """
    if intensity.per_sample:
        return np.round(np.clip(values, 0, 1) * PER_SAMPLE_LEVELS).astype(np.uint16), 1.0 / PER_SAMPLE_LEVELS
    low, high = intensity.window
    quantum = 10.0 ** np.floor(np.log10((high - low) / MIN_LEVELS_ACROSS_WINDOW))
    return np.round(np.clip(values, low, high) / quantum).astype(np.int16), float(quantum)


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


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable DICOM file: {error}") from None
    if "PixelData" not in dataset:
        raise DataError(f"{path}: DICOM file has no pixel data")
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for truncated or undecodable pixel data
        raise DataError(f"{path}: cannot decode pixel data: {error}") from None
    values = apply_modality_lut(pixels, dataset).astype(np.float32)
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        values = values.max() - values
    if values.ndim == 3 and getattr(dataset, "SamplesPerPixel", 1) > 1:
        raise DataError(f"{path}: colour DICOM is not supported for a grey-scale modality")
    return values  # (H, W) or (frames, H, W)


def _read_nifti(path: Path) -> np.ndarray:
    import nibabel

    try:
        image = nibabel.as_closest_canonical(nibabel.load(str(path)))  # RAS+: axial slices along the last axis
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:  # nibabel raises ImageFileError, EOFError, zlib errors...
        raise DataError(f"{path}: not a readable NIfTI file: {error}") from None
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        return data.T[::-1]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 2D or 3D NIfTI volume, got shape {data.shape}")
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1])  # (slices, rows=anterior->posterior, cols)


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable .npy array: {error}") from None


def read_imaging(path: Path, spec: ModalitySpec) -> torch.Tensor:
    """One file -> (C, H, W) for an image modality, (D, C, H, W) for a volume modality."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = _suffix(path)
    if suffix in DISPLAY_SUFFIXES:
        slices = torch.from_numpy(_read_display(path, spec))[None]
    else:
        readers = {".dcm": _read_dicom, ".nii": _read_nifti, ".nii.gz": _read_nifti, ".npy": _read_npy}
        if suffix not in readers:
            raise DataError(f"{path}: unsupported file type {suffix or '(none)'} for {spec.name} (expected one of {', '.join(IMAGING_SUFFIXES)})")
        values = readers[suffix](path)
        if values.ndim == 2:
            values = values[None]
        if values.ndim != 3:
            raise DataError(f"{path}: expected a 2D image or a stack of slices, got shape {values.shape}")
        slices = torch.from_numpy(window_to_model(values, spec.intensity))[:, None]
        if spec.channels != 1:
            slices = slices.expand(-1, spec.channels, -1, -1)
    slices = resize_to_grid(slices.float(), spec.image_size)
    if spec.kind is ModalityKind.IMAGE:
        if slices.shape[0] != 1:
            raise DataError(f"{path}: {spec.name} expects one 2D image, found {slices.shape[0]} slices/frames")
        return slices[0].contiguous()
    return slices.contiguous()


def write_imaging(sample: torch.Tensor, path: Path, spec: ModalitySpec) -> Path:
    """Write (C, H, W) or (D, C, H, W) in [-1, 1]; the suffix picks PNG, NIfTI or .npy."""
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

        pixels = np.round((np.clip(slices[0], -1, 1) + 1) * 127.5).astype(np.uint8)
        Image.fromarray(pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)).save(path)
    elif suffix in (".nii", ".nii.gz"):
        import nibabel

        volume = model_to_window(slices[:, 0], spec.intensity)  # (D, H, W), rows anterior->posterior
        stored, slope = quantise_like_a_scanner(volume, spec.intensity)
        image = nibabel.Nifti1Image(np.ascontiguousarray(np.transpose(stored[:, ::-1], (2, 1, 0))), np.eye(4))
        image.header.set_slope_inter(slope, 0.0)
        nibabel.save(image, str(path))
    elif suffix == ".npy":
        np.save(path, model_to_window(slices[:, 0] if array.ndim == 4 else slices[0, 0], spec.intensity))
    else:
        raise DataError(f"{path}: cannot write {suffix or '(no suffix)'} for {spec.name} (use .png, .nii.gz or .npy)")
    return path
