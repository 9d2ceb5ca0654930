"""Dataset recipes: a public dataset's published folder layout -> the pair graph's manifests.

``medm2g ingest FOLDER --recipe NAME --out DIR`` runs one; each recipe module documents the layout
it reads and the choices it makes (which view, which report sections, which split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import attrs

from medm2g.core.data.recipes import iu_xray, mimic_cxr, mri_only, paired_mr_ct
from medm2g.core.data.recipes.common import RecipeRecord, RecipeSummary, with_a_test_subject, write_recipe
from medm2g.core.errors import ConfigError


@attrs.frozen
class Recipe:
    read: Callable  # (root, **options) -> iterator of RecipeRecord or (path, reason)
    pair: tuple[str, ...]  # two modalities, or one for single-modality data
    description: str
    intensity_windows: dict | None = None


RECIPES = {
    "mimic-cxr": Recipe(mimic_cxr.records, ("text", "xray"),
                        "MIMIC-CXR-JPG frontal images with their reports' findings and impression (official split)"),
    "iu-xray": Recipe(iu_xray.records, ("text", "xray"),
                      "IU X-ray (Open-i) frontal images with their reports' findings and impression"),
    "synthrad": Recipe(paired_mr_ct.records, ("ct", "mri"), "SynthRAD 2023 Task 1: registered MR and CT per patient"),
    "gold-atlas": Recipe(paired_mr_ct.records, ("ct", "mri"), "Gold Atlas pelvis: CT and T2 MR per patient",
                         {"ct": [-160, 240]}),  # a soft-tissue window: the pelvis, not the head
    "ixi": Recipe(mri_only.ixi_records, ("mri",), "IXI: one MRI contrast per healthy subject (MRI only)"),
    "brats": Recipe(mri_only.brats_records, ("mri",), "BraTS: one MRI contrast per glioma patient, the segmentation "
                                                      "as mask (MRI only)"),
}


def run_recipe(name: str, folder: Path, out: Path, **options) -> RecipeSummary:
    """Read ``folder`` with recipe ``name`` and write its manifests, skip report and pair graph into ``out``."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r} (recipes: {', '.join(RECIPES)})")
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder (give the dataset's folder as published)")
    recipe = RECIPES[name]
    found = [item for item in recipe.read(folder, **options)]
    records = [item for item in found if isinstance(item, RecipeRecord)]
    skipped = [item for item in found if not isinstance(item, RecipeRecord)]
    records, moved = with_a_test_subject(records)
    notes = [moved] if moved else []
    if "mask" in {key for record in records for key in record.metadata}:
        missing = sum(1 for record in records if not record.metadata.get("mask"))
        if missing:
            notes.append(f"{missing} of {len(records)} patients have no mask (kept; the mask column is empty)")
    return write_recipe(name, Path(out), recipe.pair, records, skipped, intensity_windows=recipe.intensity_windows,
                        description=recipe.description, notes=notes)


__all__ = ["RECIPES", "Recipe", "RecipeRecord", "RecipeSummary", "run_recipe"]
