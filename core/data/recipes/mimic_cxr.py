"""MIMIC-CXR-JPG with the MIMIC-CXR reports -> text-xray manifests (the paper's text-X-ray data).

The published layout (PhysioNet; credentialed access, obtained by you):

    ROOT/mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, subject_id, study_id, ViewPosition, ...
    ROOT/mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split (train/validate/test)
    ROOT/files/p10/p10000032/s50414267/<dicom_id>.jpg
    REPORTS/files/p10/p10000032/s50414267.txt  (MIMIC-CXR's reports; REPORTS defaults to
                                                ROOT/mimic-cxr-reports, else ROOT)

One record per study: its frontal image (PA, else AP; a study with lateral views only is
skipped), and its report's FINDINGS and IMPRESSION sections (one without the other is kept with
the one it has; a report with neither, say a wet read, is skipped). The split is the official
one (``validate`` -> ``val``), which keeps each patient in one split.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from pathlib import Path
from typing import Iterator

from medm2g.core.data.recipes.common import RecipeRecord
from medm2g.core.errors import DataError

FRONTAL = ("PA", "AP")
"""Frontal views, in the order a study's image is chosen."""

SECTION = re.compile(r"^\s*([A-Z][A-Z /&]+):", re.MULTILINE)
SPLITS = {"train": "train", "validate": "val", "test": "test"}


def _table(root: Path, stem: str) -> list[dict]:
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        path = root / name
        if path.is_file():
            opened = gzip.open(path, "rt", encoding="utf-8") if name.endswith(".gz") else path.open(encoding="utf-8")
            with opened as handle:
                try:
                    return list(csv.DictReader(io.StringIO(handle.read())))
                except (csv.Error, UnicodeDecodeError) as error:
                    raise DataError(f"{path}: not a readable CSV table: {error}") from None
    raise DataError(f"{root}: no {stem}.csv or {stem}.csv.gz; is this the MIMIC-CXR-JPG folder as published?")


def report_sections(text: str) -> dict[str, str]:
    """{SECTION: its text} of a MIMIC-CXR report, by its upper-case ``NAME:`` headers."""
    headers = list(SECTION.finditer(text))
    return {match.group(1).strip(): " ".join(text[match.end(): following.start() if following else None].split())
            for match, following in zip(headers, headers[1:] + [None])}


def report_text(text: str) -> str | None:
    """"Findings: ... Impression: ..." from a report, with the sections it has; None with neither."""
    sections = report_sections(text)
    parts = [f"{label}: {sections[key]}" for key, label in (("FINDINGS", "Findings"), ("IMPRESSION", "Impression"))
             if sections.get(key)]
    return " ".join(parts) or None


def records(root: Path, reports: Path | None = None) -> Iterator[RecipeRecord | tuple[str, str]]:
    """Each study's record, or (path, reason) where it is skipped."""
    root = Path(root)
    reports = Path(reports) if reports else (root / "mimic-cxr-reports" if (root / "mimic-cxr-reports").is_dir()
                                             else root)
    split_of = {row["dicom_id"]: row["split"] for row in _table(root, "mimic-cxr-2.0.0-split")}
    studies: dict[tuple[str, str], list[dict]] = {}
    for row in _table(root, "mimic-cxr-2.0.0-metadata"):
        studies.setdefault((row["subject_id"], row["study_id"]), []).append(row)
    for (subject, study), images in sorted(studies.items()):
        folder = Path("files") / f"p{subject[:2]}" / f"p{subject}"
        where = str(root / folder / f"s{study}")
        views = {image.get("ViewPosition", "").upper(): image for image in images}
        chosen = next((views[view] for view in FRONTAL if view in views), None)
        if chosen is None:
            yield where, f"no frontal view: only {', '.join(sorted(v or 'unlabelled' for v in views))}"
            continue
        image = root / folder / f"s{study}" / f"{chosen['dicom_id']}.jpg"
        if not image.is_file():
            yield str(image), "image file missing"
            continue
        report_path = reports / folder / f"s{study}.txt"
        if not report_path.is_file():
            yield str(report_path), "report file missing"
            continue
        text = report_text(report_path.read_text(encoding="utf-8", errors="replace"))
        if text is None:
            yield str(report_path), "no FINDINGS or IMPRESSION section"
            continue
        split = SPLITS.get(split_of.get(chosen["dicom_id"], ""))
        if split is None:
            yield str(image), f"not in the official split file ({chosen['dicom_id']})"
            continue
        yield RecipeRecord(f"p{subject}", split, {"text": text, "xray": str(image)},
                           {"study_id": f"s{study}", "view": chosen.get("ViewPosition", "").upper(),
                            "dicom_id": chosen["dicom_id"]})
