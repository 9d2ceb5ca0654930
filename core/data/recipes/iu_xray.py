"""IU X-ray (Open-i, Indiana University chest X-rays) -> text-xray manifests.

The published layout:

    ROOT/ecgen-radiology/<n>.xml    one report per study (searched anywhere under ROOT): its
                                    <AbstractText Label="FINDINGS">, Label="IMPRESSION" and the
                                    <parentImage id="CXR1_1_IM-0001-3001"> of each image
    ROOT/NLMCXR_png/<id>.png        the images (searched anywhere under ROOT, names matched
                                    ignoring case)
    ROOT/indiana_projections.csv    optional (the Kaggle copy ships it): filename, projection
                                    ("Frontal"/"Lateral")

One record per report: its frontal image (by the projections table where there is one; without
it, the first image the report lists, which in Open-i is the frontal view for most studies) and
the FINDINGS and IMPRESSION it has (neither: skipped). IU X-ray has no official split and one
report per patient, so the split is a hash of the report id.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Iterator

from medm2g.core.data.recipes.common import RecipeRecord, hashed_split


def _projections(root: Path) -> dict[str, str]:
    table = next(root.rglob("indiana_projections.csv"), None)
    if table is None:
        return {}
    with table.open(encoding="utf-8") as handle:
        return {row["filename"].lower(): row["projection"].lower() for row in csv.DictReader(handle)
                if row.get("filename") and row.get("projection")}


def records(root: Path) -> Iterator[RecipeRecord | tuple[str, str]]:
    root = Path(root)
    images = {path.name.lower(): path for path in root.rglob("*") if path.suffix.lower() == ".png"}
    projections = _projections(root)
    for report in sorted(root.rglob("*.xml")):
        try:
            tree = ElementTree.parse(report).getroot()
        except ElementTree.ParseError as error:
            yield str(report), f"not readable XML: {error}"
            continue
        sections = {(node.get("Label") or "").upper(): " ".join((node.text or "").split())
                    for node in tree.iter("AbstractText")}
        parts = [f"{label}: {sections[key]}" for key, label in (("FINDINGS", "Findings"), ("IMPRESSION", "Impression"))
                 if sections.get(key)]
        if not parts:
            yield str(report), "no FINDINGS or IMPRESSION section"
            continue
        listed = [f"{node.get('id')}.png".lower() for node in tree.iter("parentImage") if node.get("id")]
        present = [name for name in listed if name in images]
        if not present:
            yield str(report), "no image of the report found" if listed else "the report lists no image"
            continue
        if projections:
            frontal = [name for name in present if projections.get(name) == "frontal"]
            if not frontal:
                yield str(report), "no frontal view: only lateral"
                continue
            chosen = frontal[0]
        else:
            chosen = present[0]
        uid = tree.find(".//uId")
        subject = uid.get("id") if uid is not None and uid.get("id") else report.stem
        yield RecipeRecord(subject, hashed_split(subject), {"text": " ".join(parts), "xray": str(images[chosen])},
                           {"report": report.name, "view": projections.get(chosen, "first listed")})
