"""Paired-data manifests: the datasets a pair graph names.

A manifest is a table (CSV, JSONL or Parquet) with one row per record: a
``subject_id``, optionally a ``split`` (default ``train``) and a ``slice`` (the key
axial slice of volumes), and one column per modality holding a file path relative
to the manifest or, for text modalities, inline report text (a value ending in
``.txt`` is read as a file). A record may have any subset of modalities; each stage
takes the records that have the pair it needs. Other columns are kept as metadata,
except names that look like a misspelled modality, which are errors.

A malformed manifest (not UTF-8, NUL bytes, a row longer than its header, a JSON line that
is not an object or nests too deep, a file that is not Parquet) is one :class:`DataError`
line naming the file and the row, with every echoed value cut to a short prefix.
"""

from __future__ import annotations

import csv
import difflib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

import attrs

from medm2g.core.errors import DataError
from medm2g.core.structuring import ECHO_LENGTH, explain, one_line, shown
from medm2g.registry import ModalityKind, ModalityRegistry

RESERVED_COLUMNS = ("subject_id", "split", "slice")


@attrs.frozen
class ManifestRecord:
    """One row. ``row`` is the 1-based data row (the header is not counted)."""

    row: int
    subject_id: str
    split: str
    values: Mapping[str, str]
    slice_index: int | None = None
    metadata: Mapping[str, str] = attrs.field(factory=dict)

    def has(self, *modalities: str) -> bool:
        return all(self.values.get(m) for m in modalities)


@attrs.frozen
class Manifest:
    path: Path
    modalities: tuple[str, ...]
    records: tuple[ManifestRecord, ...]

    def having(self, *modalities: str, split: str | None = None) -> tuple[ManifestRecord, ...]:
        """The records with every modality given (and of the split, when given)."""
        return tuple(r for r in self.records if r.has(*modalities) and (split is None or r.split == split))

    def resolve(self, value: str) -> Path:
        return (self.path.parent / value).resolve()


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, restkey=_EXTRA)
        try:
            rows = list(reader)
        except csv.Error as error:
            raise DataError(f"{_name(path)}: line {reader.line_num}: not CSV: {one_line(error)}") from None
    for number, row in enumerate(rows, 1):
        if _EXTRA in row:
            raise DataError(f"{_name(path)}: row {number}: {len(row) - 1 + len(row[_EXTRA])} values, but the "
                            f"header names {len(reader.fieldnames or ())} columns")
    return rows


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{_name(path)}: line {number}: not JSON: {error.msg}") from None
        except RecursionError:
            raise DataError(f"{_name(path)}: line {number}: JSON nested too deeply") from None
        if not isinstance(row, dict):
            raise DataError(f"{_name(path)}: line {number}: expected a JSON object (one record), "
                            f"got {type(row).__name__} {shown(row)}")
        rows.append(row)
    return rows


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow
        import pyarrow.parquet as parquet
    except ImportError:
        raise DataError(f"{_name(path)}: reading Parquet needs pyarrow (pip install 'medm2g[parquet]')") from None
    try:
        return parquet.read_table(path).to_pylist()
    except pyarrow.ArrowException as error:
        raise DataError(f"{_name(path)}: not a readable Parquet table: {one_line(error)}") from None


_EXTRA = "\0extra"  # DictReader's key for values past the header's columns: no header names it


def _name(path: Path) -> str:
    return one_line(str(path), 1000)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    readers = {".csv": _csv_rows, ".jsonl": _jsonl_rows, ".parquet": _parquet_rows}
    if suffix not in readers:
        raise DataError(f"{_name(path)}: unsupported manifest type {one_line(suffix, 20) or '(none)'} "
                        f"(expected .csv, .jsonl or .parquet)")
    try:
        return readers[suffix](path)
    except FileNotFoundError:
        raise DataError(f"{_name(path)}: manifest not found") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{_name(path)}: not UTF-8 text: {error.reason} at byte {error.start}") from None
    except OSError as error:
        raise DataError(f"{_name(path)}: cannot read manifest: {error.strerror or error}") from None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def read_manifest(path: Path | str, registry: ModalityRegistry) -> Manifest:
    """Read a manifest and check its columns against the installed modalities."""
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"{_name(path)}: the manifest has no records")
    columns = list(dict.fromkeys(str(key) for row in rows for key in row))
    if "subject_id" not in columns:
        raise DataError(f"{_name(path)}: missing column 'subject_id' "
                        f"(columns: {one_line(', '.join(shown(c, 30) for c in columns[:10]))}"
                        f"{f' and {len(columns) - 10} more' if len(columns) > 10 else ''})")
    modalities = tuple(c for c in columns if c in registry)
    for column in columns:
        if column in RESERVED_COLUMNS or column in registry or len(column) > 64:  # 64: no misspelled name
            continue
        close = difflib.get_close_matches(column, list(registry), n=1, cutoff=0.75)
        if close:
            raise DataError(f"{_name(path)}: column {shown(column)} is not an installed modality (did you mean "
                            f"{close[0]!r}? installed: {', '.join(registry)})")
    if not modalities:
        raise DataError(f"{_name(path)}: no column names an installed modality (installed: {', '.join(registry)})")
    records = []
    for number, row in enumerate(rows, 1):
        slice_text = _text(row.get("slice"))
        try:
            slice_index = int(slice_text) if slice_text else None
        except ValueError:
            raise DataError(f"{_name(path)}: row {number}: slice must be an integer, got {shown(slice_text)}") from None
        records.append(ManifestRecord(
            row=number,
            subject_id=_text(row.get("subject_id")),
            split=_text(row.get("split")) or "train",
            values={m: _text(row.get(m)) for m in modalities if _text(row.get(m))},
            slice_index=slice_index,
            metadata={c: _text(row.get(c)) for c in columns if c not in RESERVED_COLUMNS and c not in modalities},
        ))
    return Manifest(path, modalities, tuple(records))


def is_inline_text(registry: ModalityRegistry, modality: str, value: str) -> bool:
    return registry[modality].spec.kind is ModalityKind.TEXT and not value.lower().endswith(".txt")


def _exists(manifest: Manifest, value: str) -> bool:
    try:
        return manifest.resolve(value).exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def manifest_problems(manifest: Manifest, registry: ModalityRegistry, check_files: bool = True) -> list[str]:
    """Every problem, each naming its row: empty ids, missing files, duplicates, split leakage."""
    problems = []
    seen: dict[tuple, int] = {}
    splits_of: dict[str, dict[str, int]] = {}
    for record in manifest.records:
        where = f"row {record.row}"
        if not record.subject_id:
            problems.append(f"{where}: empty subject_id")
        if not record.values:
            problems.append(f"{where}: no modality has a value")
        if check_files:
            for modality, value in record.values.items():
                # exists, not is_file: a DICOM series is a folder (medm2g ingest writes those)
                if not is_inline_text(registry, modality, value) and not _exists(manifest, value):
                    problems.append(f"{where}: {modality} file not found: {one_line(value, ECHO_LENGTH)}")
        key = (record.subject_id, record.split, tuple(sorted(record.values.items())), record.slice_index)
        if key in seen:
            problems.append(f"{where}: duplicate of row {seen[key]}")
        seen.setdefault(key, record.row)
        splits_of.setdefault(record.subject_id, {}).setdefault(record.split, record.row)
    for subject, splits in splits_of.items():
        if subject and len(splits) > 1:
            where = ", ".join(f"{split} (row {row})" for split, row in splits.items())
            problems.append(f"subject {one_line(subject, ECHO_LENGTH)} is in several splits: {where}")
    return problems


def validate_manifest(manifest: Manifest, registry: ModalityRegistry, check_files: bool = True) -> Manifest:
    """Raise one DataError listing every problem (first ten, with the count), or return the manifest."""
    problems = manifest_problems(manifest, registry, check_files)
    if problems:
        raise DataError(explain(f"{manifest.path}: {len(problems)} problem(s)", problems))
    return manifest


def split_counts(manifest: Manifest, modalities: Iterable[str]) -> Counter:
    """How many records of each split have all the given modalities."""
    return Counter(r.split for r in manifest.having(*modalities))
