"""MRI-only datasets -> one contrast's ``mri`` manifest and a one-modality graph: IXI and BraTS.

IXI, as published (one tar per contrast, extracted into a folder each):

    ROOT/IXI-T1/IXI002-Guys-0828-T1.nii.gz   (also T2, PD; subject IXI002, site Guys)

BraTS 2020/2021, as published (one folder per patient):

    ROOT/BraTS2021_00000/BraTS2021_00000_t1.nii.gz, _t1ce, _t2, _flair, _seg.nii.gz
    ROOT/BraTS20_Training_001/BraTS20_Training_001_t1.nii.gz, ...

``contrast`` picks the one contrast a manifest holds (the ``mri`` plugin is one modality); file
names are matched ignoring case; a BraTS patient's tumour segmentation goes into the ``mask``
column (a patient without one is kept and counted). Neither has a public split of its training
subjects, so the split is a hash of the subject id. The graph names the manifest as
``single_modality`` data: it trains the MRI prompt encoder (visual invariant), VAE and LDM.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from medm2g.core.data.recipes.common import RecipeRecord, hashed_split
from medm2g.core.errors import ConfigError

IXI_CONTRASTS = ("t1", "t2", "pd")
BRATS_CONTRASTS = ("t1", "t1ce", "t2", "flair")
IXI_NAME = re.compile(r"^(IXI\d{3})-([A-Za-z]+)-(\d+)-([A-Za-z0-9]+)\.nii(\.gz)?$", re.IGNORECASE)


def _contrast(contrast: str, known: tuple[str, ...], dataset: str) -> str:
    contrast = contrast.lower()
    if contrast not in known:
        raise ConfigError(f"--contrast {contrast!r}: {dataset} has {', '.join(known)}")
    return contrast


def ixi_records(root: Path, contrast: str = "t1") -> Iterator[RecipeRecord | tuple[str, str]]:
    contrast = _contrast(contrast, IXI_CONTRASTS, "IXI")
    for path in sorted(Path(root).rglob("*")):
        match = IXI_NAME.match(path.name)
        if match is None or not path.is_file() or match.group(4).lower() != contrast:
            continue
        subject, site = match.group(1).upper(), match.group(2)
        yield RecipeRecord(subject, hashed_split(subject), {"mri": str(path)}, {"site": site, "contrast": contrast})


def _brats_file(folder: Path, suffix: str) -> Path | None:
    wanted = (f"{folder.name}_{suffix}.nii.gz".lower(), f"{folder.name}_{suffix}.nii".lower())
    return next((entry for entry in sorted(folder.iterdir()) if entry.name.lower() in wanted), None)


def brats_records(root: Path, contrast: str = "t1") -> Iterator[RecipeRecord | tuple[str, str]]:
    contrast = _contrast(contrast, BRATS_CONTRASTS, "BraTS")
    folders = (path for path in Path(root).rglob("*") if path.is_dir() and path.name.lower().startswith("brats"))
    for folder in sorted(folders):
        image = _brats_file(folder, contrast)
        if image is None:
            if any(_brats_file(folder, other) for other in BRATS_CONTRASTS):
                yield str(folder), f"no {contrast} image (other contrasts present)"
            continue
        segmentation = _brats_file(folder, "seg")
        yield RecipeRecord(folder.name, hashed_split(folder.name), {"mri": str(image)},
                           {"mask": str(segmentation) if segmentation else "", "contrast": contrast})
