"""What every dataset recipe shares: records, subject-level splits, and writing a ready run folder.

A recipe reads a public dataset's published layout and yields :class:`RecipeRecord` s (one per
usable study or patient) and skips (path, reason). :func:`write_recipe` then writes, under the
output folder:

- ``data/<a>-<b>.csv``, the pair's manifest (train and val rows), and ``data/test.csv`` (test rows);
  for a one-modality dataset (MRI only), ``data/<m>.csv``, named as ``single_modality`` data;
- ``data/skipped.csv``, every skipped study with its reason;
- ``<recipe>.yaml``, a pair graph naming them, ready for ``medm2g plan`` and ``medm2g train``.

Splits are by subject, never by image: a dataset's official split where it has one, otherwise a
hash of the subject id (stable across runs and machines, independent of file order).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import attrs
import yaml

from medm2g.core.errors import DataError
from medm2g.core.io.checkpoints import write_atomically

SPLITS = ("train", "val", "test")


@attrs.frozen
class RecipeRecord:
    """One usable record: its subject, split, files (modality -> path) or inline report, and metadata."""

    subject_id: str
    split: str
    values: dict[str, str]  # modality -> file path (absolute) or, for text, the report itself
    metadata: dict[str, str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"{self.subject_id}: split {self.split!r} is not one of {', '.join(SPLITS)}")


@attrs.frozen
class RecipeSummary:
    name: str
    graph: Path
    manifests: dict[str, int]  # manifest (relative to the output folder) -> rows
    skipped: Counter  # reason kind -> count
    skip_report: Path | None
    notes: tuple[str, ...] = ()


def hashed_split(subject_id: str, validation: float = 0.1, test: float = 0.1) -> str:
    """A subject's split from the SHA-256 of its id: the same on every machine and in every order."""
    unit = int(hashlib.sha256(subject_id.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if unit < test else "val" if unit < test + validation else "train"


def with_a_test_subject(records: Sequence[RecipeRecord]) -> tuple[list[RecipeRecord], str | None]:
    """``records`` with at least one test subject: where the hash gave none (a small dataset), the
    subject with the smallest hash goes to test; returns the records and a note saying so, or None."""
    records = list(records)
    subjects = sorted({r.subject_id for r in records}, key=lambda s: hashlib.sha256(s.encode("utf-8")).hexdigest())
    if any(r.split == "test" for r in records) or len(subjects) < 2:
        return records, None
    chosen = subjects[0]
    return ([attrs.evolve(r, split="test") if r.subject_id == chosen else r for r in records],
            f"no subject hashed into test; {chosen} was moved there so the graph has held-out data")


def find_case_insensitive(folder: Path, *names: str) -> Path | None:
    """The entry of ``folder`` whose name matches one of ``names`` ignoring case (``MR.nii.gz``)."""
    wanted = {name.lower() for name in names}
    if not folder.is_dir():
        return None
    return next((entry for entry in sorted(folder.iterdir()) if entry.name.lower() in wanted), None)


def _relative(path: str, folder: Path) -> str:
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive
        return str(Path(path).resolve())


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> int:
    rows = list(rows)

    def write(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, write)
    return len(rows)


def write_recipe(name: str, out: Path, pair: tuple[str, ...], records: Sequence[RecipeRecord],
                 skipped: Sequence[tuple[str, str]], text_modalities: Sequence[str] = ("text",),
                 intensity_windows: dict[str, list[float]] | None = None, description: str = "",
                 notes: Sequence[str] = (), path_columns: Sequence[str] = ("mask",)) -> RecipeSummary:
    """Write the pair's manifests, the skip report and the pair graph of ``records`` into ``out``;
    files (modality values and the ``path_columns`` of metadata) are written relative to ``data/``."""
    out = Path(out)
    if not records:
        reasons = Counter(reason.split(":")[0] for _, reason in skipped)
        found = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common(5)) or "nothing matched"
        raise DataError(f"{name}: no usable records ({found}); is this the dataset's folder as published?")
    data = out / "data"
    label = "-".join(pair)
    metadata = sorted({key for record in records for key in record.metadata})
    columns = ["subject_id", "split", "slice", *pair, *metadata]

    def row(record: RecipeRecord) -> dict:
        values = {m: (v if m in text_modalities else _relative(v, data)) for m, v in record.values.items()}
        extra = {k: (_relative(v, data) if k in path_columns and v else v) for k, v in record.metadata.items()}
        return {"subject_id": record.subject_id, "split": record.split, "slice": "", **values, **extra}

    manifests = {
        f"data/{label}.csv": _write_csv(data / f"{label}.csv", columns,
                                        (row(r) for r in records if r.split != "test")),
        "data/test.csv": _write_csv(data / "test.csv", columns, (row(r) for r in records if r.split == "test")),
    }
    report = None
    if skipped:
        report = data / "skipped.csv"
        _write_csv(report, ["path", "reason"], ({"path": path, "reason": reason} for path, reason in skipped))
    data_entry = ({"pairs": [{"a": pair[0], "b": pair[1], "dataset": f"data/{label}.csv"}]} if len(pair) == 2 else
                  {"pairs": [], "single_modality": [{"modality": pair[0], "dataset": f"data/{label}.csv"}]})
    graph = {"name": name, "description": description or f"{label} data made by the {name} recipe",
             "center": "text" if "text" in pair else pair[0], "evaluation": "data/test.csv",
             **({"intensity_windows": intensity_windows} if intensity_windows else {}),
             "modalities": list(pair), **data_entry}
    graph_path = out / f"{name}.yaml"
    header = f"# made by `medm2g ingest --recipe {name}`: the pair graph of the manifests beside it\n"
    write_atomically(graph_path, lambda temporary: temporary.write_text(
        header + yaml.safe_dump(graph, sort_keys=False), encoding="utf-8"))
    return RecipeSummary(name, graph_path, manifests, Counter(reason.split(":")[0] for _, reason in skipped),
                         report, tuple(notes))
