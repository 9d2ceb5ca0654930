"""DICOM in: single files (single- or multi-frame), series folders, every transfer syntax
pydicom can decode with the pylibjpeg plugins (JPEG, JPEG-LS, JPEG 2000, RLE).

Values come out in the modality's physical units (the modality LUT: Hounsfield units
for CT), with MONOCHROME1 inverted so bright always means more signal or attenuation.
For per-sample conventions (X-ray, MR), a VOI LUT or window in the file is applied
first: it is the contrast the acquiring site chose to read the image in.
Each failure is a one-line :class:`~medm2g.core.errors.DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np

from medm2g.core.errors import DataError
from medm2g.core.io.pixels import Pixels
from medm2g.registry.specs import ModalitySpec

DICOM_PREAMBLE_LENGTH = 128


@contextlib.contextmanager
def quiet_pydicom():
    """pydicom reports each oddity (implicit VR, padding) both to its logger and as a Python
    warning; keep the log record (``medm2g -v`` shows it) and drop the duplicate warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def looks_like_dicom(path: Path) -> bool:
    """True for a file with the 'DICM' marker after the 128-byte preamble (most DICOM has no suffix)."""
    try:
        with path.open("rb") as handle:
            handle.seek(DICOM_PREAMBLE_LENGTH)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` suffix, or the 'DICM' marker whatever the name (most DICOM has no suffix)."""
    return path.suffix.lower() == ".dcm" or looks_like_dicom(path)


def dicom_files_in(folder: Path) -> list[Path]:
    """The DICOM files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p))


def _spacing(dataset) -> tuple[float, float] | None:
    spacing = dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing")
    try:
        row, column = (float(v) for v in spacing)
    except (TypeError, ValueError):
        return None
    return (row, column) if row > 0 and column > 0 else None


def read_dataset(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with quiet_pydicom():
            return pydicom.dcmread(path)
    except InvalidDicomError:
        raise DataError(f"{path}: not a DICOM file, or missing its meta header and 'DICM' marker") from None
    except (OSError, ValueError, EOFError, KeyError, TypeError) as error:
        raise DataError(f"{path}: unreadable DICOM: {type(error).__name__}: {error}") from None


def check_modality(path: Path, dataset, spec: ModalitySpec) -> None:
    found = str(dataset.get("Modality", "") or "(none)")
    if spec.dicom_modalities and found not in spec.dicom_modalities:
        raise DataError(
            f"{path}: DICOM Modality is {found}, not one {spec.name} reads ({', '.join(spec.dicom_modalities)})"
        )


def pixels_of(path: Path, dataset, spec: ModalitySpec) -> Pixels:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError(f"{path}: DICOM file has no pixel data")
    if int(dataset.get("SamplesPerPixel", 1)) != 1 and spec.channels == 1:
        raise DataError(f"{path}: {dataset.get('PhotometricInterpretation', 'colour')} pixels, "
                        f"but {spec.name} is grey-scale")
    try:
        with quiet_pydicom():
            raw = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for truncated, missing-decoder or corrupt data
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path}: cannot decode pixel data "
                        f"({dataset.file_meta.get('TransferSyntaxUID', 'unknown syntax')}): {reason}") from None
    values = apply_modality_lut(raw, dataset).astype(np.float32)
    has_voi = "VOILUTSequence" in dataset or "WindowCenter" in dataset
    if spec.intensity.per_sample and has_voi:
        values = apply_voi_lut(values, dataset, prefer_lut=True).astype(np.float32)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        values = values.max() - values
    if values.ndim == 2:
        values = values[None]
    return Pixels(values, _spacing(dataset))


def read_dicom_file(path: Path, spec: ModalitySpec) -> Pixels:
    dataset = read_dataset(path)
    check_modality(path, dataset, spec)
    return pixels_of(path, dataset, spec)


def _slice_position(dataset) -> float | None:
    """Distance along the slice normal (from ImageOrientationPatient and ImagePositionPatient)."""
    try:
        orientation = np.array(dataset.ImageOrientationPatient, dtype=float)
        position = np.array(dataset.ImagePositionPatient, dtype=float)
    except (AttributeError, ValueError, TypeError):
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    return float(position @ normal)


def read_dicom_series(folder: Path, spec: ModalitySpec) -> Pixels:
    """A folder of one series' single-frame files as a volume, slices ordered by position."""
    files = dicom_files_in(folder)
    if not files:
        raise DataError(f"{folder}: folder holds no DICOM files")
    datasets = [(path, read_dataset(path)) for path in files]
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in datasets}
    if len(series) > 1:
        raise DataError(f"{folder}: holds {len(series)} series; point at one series folder "
                        f"(series: {', '.join(sorted(series)[:3])}{'...' if len(series) > 3 else ''})")
    for path, dataset in datasets:
        check_modality(path, dataset, spec)
    positions = [_slice_position(ds) for _, ds in datasets]
    if all(p is not None for p in positions):
        order = np.argsort(positions, kind="stable")
    else:
        order = np.argsort([int(ds.get("InstanceNumber", 0) or 0) for _, ds in datasets], kind="stable")
    slices = [pixels_of(datasets[i][0], datasets[i][1], spec) for i in order]
    shapes = {s.values.shape[1:] for s in slices}
    if len(shapes) > 1:
        raise DataError(f"{folder}: slices differ in size ({', '.join('x'.join(map(str, s)) for s in sorted(shapes))})")
    return Pixels(np.concatenate([s.values for s in slices]), slices[0].spacing_mm)
