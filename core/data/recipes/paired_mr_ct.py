"""Paired MR-CT of one patient each -> ct-mri manifests: SynthRAD 2023 and the Gold Atlas pelvis.

SynthRAD (Task 1: MR to CT), as published:

    ROOT/Task1/brain/1BA001/mr.nii.gz, ct.nii.gz, mask.nii.gz
    ROOT/Task1/pelvis/1PA001/...            (any depth: every folder holding mr and ct)

The Gold Atlas pelvis (Nyholm et al. 2018), one folder per patient holding a CT and a T2 MR, each
a NIfTI file or a DICOM series folder whose name starts with ``ct`` and with ``mr`` or ``t2``:

    ROOT/1_01_P/CT/*.dcm,  ROOT/1_01_P/MR/*.dcm   (or ct.nii.gz, T2.nii.gz, ...)

Names are matched ignoring case (``MR.nii.gz``, ``Ct``). The body mask, where the patient has one
(``mask.nii.gz``), goes into the manifest's ``mask`` column; a patient without one is kept and
counted in the summary. SynthRAD's images are registered (the mask marks the body), so the rows
are paired; neither dataset has a public split of its training patients, so the split is a hash
of the patient id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from medm2g.core.data.recipes.common import RecipeRecord, find_case_insensitive, hashed_split

NIFTI = (".nii.gz", ".nii")


def _image(folder: Path, prefixes: tuple[str, ...]) -> Path | None:
    """A NIfTI file, or a folder of DICOM files, in ``folder`` whose name starts with one of ``prefixes``."""
    for entry in sorted(folder.iterdir()):
        name = entry.name.lower()
        if not name.startswith(prefixes):
            continue
        if entry.is_file() and name.endswith(NIFTI):
            return entry
        if entry.is_dir() and any(child.is_file() for child in entry.iterdir()):
            return entry
    return None


def records(root: Path) -> Iterator[RecipeRecord | tuple[str, str]]:
    root = Path(root)
    patients = sorted({path.parent for path in root.rglob("*") if path.name.lower().startswith(("ct", "mr", "t2"))
                       and path.parent != root})
    seen = set()
    for folder in patients:
        if folder in seen or not folder.is_dir():
            continue
        seen.add(folder)
        ct, mr = _image(folder, ("ct",)), _image(folder, ("mr", "t2"))
        if ct is None and mr is None:
            continue  # a series folder itself (CT/ holding slices), not a patient
        if ct is None or mr is None:
            yield str(folder), f"no {'CT' if ct is None else 'MR'} image beside the {'MR' if ct is None else 'CT'}"
            continue
        mask = find_case_insensitive(folder, "mask.nii.gz", "mask.nii")
        subject = folder.name
        metadata = {"mask": str(mask) if mask is not None else "",
                    "site": folder.parent.name if folder.parent != root else ""}
        yield RecipeRecord(subject, hashed_split(subject), {"ct": str(ct), "mri": str(mr)}, metadata)
