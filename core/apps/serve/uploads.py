"""A file dropped on the page, read as a condition, and said back as it was read.

A person who drops a scan wants to know what the model will see before minutes of
sampling: which modality the file was taken for (and why), how it was oriented and which
intensity window mapped it into the model's range. DICOM says its modality itself; a
NIfTI or PNG file does not, so the page asks when more than one of the run's modalities
could read it. Every failure is a :class:`~medm2g.core.errors.DataError` naming the file
as the person called it, never the server's upload folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import attrs
import numpy as np

from medm2g.core.errors import DataError
from medm2g.core.generation.conditions import Condition, condition_of_file, read_condition
from medm2g.core.io.imaging import DISPLAY_SUFFIXES
from medm2g.core.phantom.anatomy import Finding
from medm2g.core.phantom.image_findings import subject_finding
from medm2g.registry import ModalityKind, ModalityRegistry

AUTO = "auto"
"""The modality choice meaning "tell it from the file"."""

PLANES = ("sagittal", "coronal", "axial")
"""The acquisition plane whose normal runs along the patient's x, y, z axis."""


@attrs.frozen
class ReadUpload:
    """An uploaded (or held-out) file as a condition, with what the page says about the reading."""

    condition: Condition
    recognised: str  # why it was taken for this modality
    orientation: str
    window: str
    truth: Finding | None = None  # the phantom's ground truth, for a held-out subject's file

    @property
    def modality(self) -> str:
        return self.condition.modality

    def summary(self) -> str:
        truth = ""
        if self.truth is not None:
            truth = (" · truth: normal" if self.truth.is_normal
                     else f" · truth: {self.truth.kind}, {self.truth.side} {self.truth.region}")
        return (f"**{self.modality}** ({self.recognised}){truth}  \n"
                f"orientation: {self.orientation}  \nwindow: {self.window}  \nnamed in outputs as: "
                f"`{self.condition.description}`")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _as_named(error: DataError, path: Path, name: str) -> DataError:
    return DataError(str(error).replace(str(path), name))


def _dicom_dataset(path: Path, name: str):
    from medm2g.core.io.dicom_read import read_dataset

    try:
        return read_dataset(path)
    except DataError as error:
        raise _as_named(error, path, name) from None


def recognise(path: Path, name: str, registry: ModalityRegistry, candidates: Sequence[str],
              chosen: str = AUTO) -> tuple[str, str]:
    """(modality, why) of a file: the one ``chosen`` on the page, else the one of ``candidates``
    its DICOM Modality names, else the only candidate of its kind (a PNG: a 2D image modality)."""
    from medm2g.core.io.dicom_read import is_dicom_file

    if chosen != AUTO:
        if chosen not in candidates:
            raise DataError(f"{name}: this run cannot condition on {chosen!r} "
                            f"(it conditions on: {', '.join(candidates) or 'nothing'})")
        return chosen, "as chosen"
    if is_dicom_file(path):
        found = str(_dicom_dataset(path, name).get("Modality", "") or "(none)")
        matching = [m for m in candidates if found in registry[m].spec.dicom_modalities]
        if not matching:
            readable = ", ".join(f"{m} ({'/'.join(registry[m].spec.dicom_modalities) or 'any'})" for m in candidates)
            raise DataError(f"{name}: DICOM Modality {found}: this run conditions on none that reads it "
                            f"(it conditions on: {readable or 'nothing'})")
        return matching[0], f"DICOM Modality {found}"
    suffix = _suffix(path)
    imaging = [m for m in candidates if registry[m].spec.kind.is_imaging and suffix in registry[m].spec.file_suffixes]
    if not imaging:
        raise DataError(f"{name}: not a file any of this run's condition modalities reads "
                        f"({', '.join(candidates) or 'none'}); expected DICOM, NIfTI or PNG")
    kind = ModalityKind.IMAGE if suffix in DISPLAY_SUFFIXES else ModalityKind.VOLUME
    of_kind = [m for m in imaging if registry[m].spec.kind is kind] or imaging
    if len(of_kind) > 1:
        raise DataError(f"{name}: a {suffix} file does not say its modality, and this run reads it as "
                        f"{' or '.join(of_kind)}: choose which under 'the file is'")
    return of_kind[0], f"the only {kind.value} modality this run conditions on"


def _orientation(path: Path, name: str, slices: int, index: int | None) -> str:
    from medm2g.core.io.dicom_read import is_dicom_file

    where = f"slice {index} of {slices}" if slices > 1 else "one slice"
    suffix = _suffix(path)
    if is_dicom_file(path):
        dataset = _dicom_dataset(path, name)
        cosines = dataset.get("ImageOrientationPatient")
        if cosines is None or len(cosines) != 6:
            return f"no ImageOrientationPatient (a projection): used as stored; {where}"
        normal = np.cross(np.asarray(cosines[:3], dtype=float), np.asarray(cosines[3:], dtype=float))
        plane = PLANES[int(np.argmax(np.abs(normal)))]
        return f"{plane} (ImageOrientationPatient), shown radiologically (patient's right on the left); {where}"
    if suffix in (".nii", ".nii.gz"):
        import nibabel

        codes = "".join(nibabel.aff2axcodes(nibabel.load(str(path)).affine))
        return f"stored {codes}, turned to axial slices shown radiologically (patient's right on the left); {where}"
    if suffix == ".npy":
        return f"an array without orientation: taken as axial, radiological; {where}"
    return "a picture without orientation: used as stored, taken as the radiological view"


def _window(path: Path, registry: ModalityRegistry, modality: str) -> str:
    intensity = registry[modality].spec.intensity
    if _suffix(path) in DISPLAY_SUFFIXES:
        return f"display values (0..255, or 0..65535) taken as the model's range: a picture holds no {intensity.unit}"
    low, high = intensity.window
    if intensity.per_sample:
        return f"each image's own {low:g}th..{high:g}th percentile (MR signal has no absolute scale)"
    return f"{low:g}..{high:g} {intensity.unit} (the run's window; beyond it clipped)"


def read_upload(path: Path | str, registry: ModalityRegistry, candidates: Sequence[str], chosen: str = AUTO,
                slice_index: int | None = None, name: str | None = None) -> ReadUpload:
    """``path`` as a condition on the run's grid (``registry``: the run's), taken for the modality
    :func:`recognise` finds; ``name`` is what messages call the file (default: its file name)."""
    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise DataError(f"{name}: no such file")
    modality, recognised = recognise(path, name, registry, candidates, chosen)
    try:
        if registry[modality].spec.kind.is_imaging:  # read once: the condition's slice and the volume's depth
            sample = registry[modality].read(path)
            condition = condition_of_file(modality, path, sample, registry, slice_index)
        else:  # a report file: its size is checked before it is read
            sample, condition = None, read_condition(f"{modality}={path}", registry)
        volume = sample if registry[modality].spec.kind is ModalityKind.VOLUME else None
    except DataError as error:
        raise _as_named(error, path, name) from None
    slices = 1 if volume is None else int(volume.shape[0])
    index = None if volume is None else (slices // 2 if slice_index is None else slice_index)
    return ReadUpload(condition, recognised, _orientation(path, name, slices, index), _window(path, registry, modality),
                      subject_finding(path))
