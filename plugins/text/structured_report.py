"""Report text from a DICOM Structured Report: the TEXT content items, in document order.

Basic and Enhanced Text SR carry the radiologist's findings as TEXT items nested in
containers; their concept names ("Findings", "Impression") become the section labels.
"""

from __future__ import annotations

from pathlib import Path

from medm2g.core.errors import DataError
from medm2g.core.io.dicom_read import read_dataset


def _text_items(sequence) -> list[str]:
    lines = []
    for item in sequence or []:
        if item.get("ValueType") == "TEXT" and str(item.get("TextValue", "")).strip():
            names = item.get("ConceptNameCodeSequence") or []
            label = str(names[0].get("CodeMeaning", "")).strip() if names else ""
            text = " ".join(str(item.TextValue).split())  # reports are single-spaced strings in model space
            lines.append(f"{label}: {text}" if label else text)
        lines.extend(_text_items(item.get("ContentSequence")))
    return lines


def read_structured_report(path: Path) -> str:
    dataset = read_dataset(path)
    if str(dataset.get("Modality", "")) != "SR":
        raise DataError(f"{path}: DICOM Modality is {dataset.get('Modality', '(none)')}, not SR: no report text")
    lines = _text_items(dataset.get("ContentSequence"))
    if not lines:
        raise DataError(f"{path}: the structured report has no text content items")
    return " ".join(lines)
