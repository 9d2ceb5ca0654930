"""Turn a folder of medical images into a manifest, skipping (and reporting) what cannot be used.

Every candidate is decoded once through the modality's own reader, so the manifest
lists only records training can read. A bad file never stops the ingest or loses
the good ones: it lands in the skip report with its one-line reason.

For volume modalities, single-frame DICOM files of one series in one folder become
one record (the folder); everything else is one record per file.

Paths in the manifest are relative to its folder, and may lead out of it (``../``, or
absolute where no relative path exists): right for a dataset stored apart from its
manifests, and said in the summary. ``contain=True`` (``medm2g ingest --contain``, for shared
servers) refuses it: the folder searched must lie inside the manifest's folder, and a file whose
real path (symbolic links followed) leads out of it is skipped with that reason.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import defaultdict
from pathlib import Path

import attrs

from medm2g.core.errors import DataError
from medm2g.core.io.dicom_read import dicom_files_in, is_dicom_file, looks_like_dicom, quiet_pydicom
from medm2g.core.progress import progress
from medm2g.registry import Modality, ModalityKind

logger = logging.getLogger(__name__)


@attrs.frozen
class IngestReport:
    manifest: Path
    records: int
    files_seen: int
    skipped: tuple[tuple[str, str], ...]  # (path, reason)
    skip_report: Path | None
    outside: int = 0  # records whose file lies outside the manifest's folder (``../`` or absolute paths)


def _lies_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (symbolic links followed) lies in ``folder`` or below it."""
    return path.resolve().is_relative_to(folder.resolve())


def _manifest_path(path: Path, folder: Path) -> str:
    """``path`` relative to the manifest's ``folder``, or absolute where none exists (another drive)."""
    try:
        return os.path.relpath(path, folder)
    except ValueError:
        return str(path.resolve())


def _header(path: Path):
    import pydicom

    try:
        with quiet_pydicom():
            return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # unreadable headers are reported when the file itself is read
        return None


def _frames(header) -> int | None:
    """NumberOfFrames, or None when the header holds something that is not a number ('1A' occurs)."""
    try:
        with quiet_pydicom():  # pydicom converts the value, and warns, on first access
            return int(header.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return None


def _candidates(root: Path, modality: Modality) -> list[Path]:
    suffixes = tuple(modality.spec.file_suffixes)
    found = []
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            path = Path(folder) / name
            if name.lower().endswith(suffixes) or looks_like_dicom(path):
                found.append(path)
    return sorted(found)


def _group_series(files: list[Path]) -> tuple[list[tuple[Path, str]], list[Path]]:
    """(series folders with their subject id, remaining single files) for a volume modality."""
    by_series: dict[tuple[Path, str], list[tuple[Path, object]]] = defaultdict(list)
    singles = []
    for path in files:
        header = _header(path) if is_dicom_file(path) else None
        if header is None or _frames(header) != 1 or "SeriesInstanceUID" not in header:
            singles.append(path)
            continue
        by_series[(path.parent, str(header.SeriesInstanceUID))].append((path, header))
    series_per_folder = defaultdict(int)
    for folder, _ in by_series:
        series_per_folder[folder] += 1
    folders = []
    for (folder, _), members in sorted(by_series.items(), key=lambda item: str(item[0])):
        all_in_folder = len(dicom_files_in(folder))
        if len(members) > 1 and series_per_folder[folder] == 1 and all_in_folder == len(members):
            folders.append((folder, str(members[0][1].get("PatientID", "") or folder.name)))
        else:
            singles.extend(path for path, _ in members)
    return folders, sorted(singles)


def ingest(root: Path, modality: Modality, out: Path, contain: bool = False) -> IngestReport:
    """Write ``out`` (CSV: subject_id, split, <modality>) and, when files were skipped, ``out``'s
    ``.skipped.csv`` beside it. With ``contain``, no record leads out of ``out``'s folder."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    home = out.parent
    if contain and not _lies_inside(root, home):
        raise DataError(f"{root}: outside the manifest's folder {home.resolve()}, and --contain refuses manifests "
                        f"that lead out of their folder; write the manifest in {root} or a folder above it")
    files = _candidates(root, modality)
    if modality.spec.kind is ModalityKind.VOLUME:
        series, singles = _group_series(files)
    else:
        series, singles = [], files
    units: list[tuple[Path, str | None]] = [(folder, subject) for folder, subject in series]
    units += [(path, None) for path in singles]
    rows, skipped, outside = [], [], 0
    for path, subject in progress(units, desc=f"ingest {modality.name}", unit="record"):
        relative = _manifest_path(path, home)
        inside = not os.path.isabs(relative) and Path(relative).parts[:1] != (os.pardir,) and _lies_inside(path, home)
        if contain and not inside:  # a symbolic link inside the folder searched, to a file outside it
            skipped.append((str(path), f"leads out of the manifest's folder (to {path.resolve()}), refused by --contain"))
            continue
        try:
            modality.read(path)
        except DataError as error:
            message = str(error)  # names the file, or for a series folder the file inside it
            skipped.append((str(path), message.split(": ", 1)[1] if message.startswith(str(path)) else message))
            continue
        except Exception as error:  # a reader bug must not cost the user the rest of the ingest
            skipped.append((str(path), f"unexpected {type(error).__name__}: {error}"))
            continue
        if subject is None:
            header = _header(path) if path.is_file() and is_dicom_file(path) else None
            subject = str(header.get("PatientID", "") or "") if header is not None else ""
            subject = subject or path.stem.removesuffix(".nii")
        rows.append({"subject_id": subject, "split": "", modality.name: relative})
        outside += not inside
    if not rows:
        raise DataError(f"{root}: no readable {modality.name} file among {len(units)} candidates "
                        f"({skipped[0][1] if skipped else 'none found'})")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject_id", "split", modality.name])
        writer.writeheader()
        writer.writerows(rows)
    report = None
    if skipped:
        report = out.with_name(out.stem + ".skipped.csv")
        with report.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "reason"])
            writer.writerows(skipped)
    if outside:
        logger.warning("%s: %d of %d records name files outside the manifest's folder %s (../ or absolute paths): "
                       "the manifest is valid only where those files are; `medm2g ingest --contain` refuses such "
                       "paths (shared servers)", out, outside, len(rows), home.resolve())
    return IngestReport(out, len(rows), len(files), tuple(skipped), report, outside)
