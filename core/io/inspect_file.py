"""``medm2g inspect FILE``: was this file generated, and by what?

Reads the provenance medm2g embeds (see :mod:`medm2g.core.io.provenance`) from DICOM
(a file, or the first file of a series folder), PNG, NIfTI, or a text file's
sidecar; for DICOM from elsewhere it still reports the standard synthetic markers.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from medm2g.core.errors import DataError
from medm2g.core.io.provenance import NIFTI_EXTENSION_CODE, PNG_KEY, Provenance, sidecar_path


@attrs.frozen
class InspectResult:
    path: Path
    synthetic: bool
    provenance: Provenance | None
    details: str

    def summary(self) -> str:
        if self.provenance is not None:
            return f"{self.path}: synthetic. {self.provenance.describe()}"
        if self.synthetic:
            return f"{self.path}: synthetic, not made by medm2g ({self.details})"
        return f"{self.path}: no synthetic marker ({self.details})"


def _parse(text: str | bytes | None) -> Provenance | None:
    if not text:
        return None
    try:
        return Provenance.from_json(text.decode() if isinstance(text, bytes) else text)
    except (ValueError, TypeError, json.JSONDecodeError):
        return None


def _inspect_dicom(path: Path) -> InspectResult:
    from medm2g.core.io.dicom_read import read_dataset

    dataset = read_dataset(path)
    image_type = list(dataset.get("ImageType", []))
    conversion = str(dataset.get("ConversionType", ""))
    derivation = str(dataset.get("DerivationDescription", ""))
    provenance = _parse(str(dataset.get("ImageComments", ""))) if "medm2g" in derivation else None
    synthetic = conversion == "SYN" or "medm2g" in derivation
    details = f"ImageType {'/'.join(image_type) or '-'}, ConversionType {conversion or '-'}"
    return InspectResult(path, synthetic, provenance, details)


def inspect_file(path: Path) -> InspectResult:
    from medm2g.core.io.dicom_read import dicom_files_in, is_dicom_file

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        files = dicom_files_in(path)
        if not files:
            raise DataError(f"{path}: folder holds no DICOM files")
        return attrs.evolve(_inspect_dicom(files[0]), path=path)
    name = path.name.lower()
    if is_dicom_file(path):
        return _inspect_dicom(path)
    if name.endswith(".png"):
        from PIL import Image

        with Image.open(path) as image:
            provenance = _parse(getattr(image, "text", {}).get(PNG_KEY))
        return InspectResult(path, provenance is not None, provenance, "PNG without a medm2g text chunk")
    if name.endswith((".nii", ".nii.gz")):
        import nibabel

        header = nibabel.load(str(path)).header
        found = [_parse(e.get_content()) for e in header.extensions if e.get_code() == NIFTI_EXTENSION_CODE]
        provenance = next((p for p in found if p is not None), None)
        return InspectResult(path, provenance is not None, provenance, "NIfTI without a medm2g extension")
    provenance = _parse(sidecar_path(path).read_text()) if sidecar_path(path).is_file() else None
    return InspectResult(path, provenance is not None, provenance, f"no {sidecar_path(path).name} beside it")
