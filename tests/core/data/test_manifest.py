"""Manifests: formats, row-numbered problems, and serving the records a stage needs."""

import json

import pytest
import torch

from medm2g.core.data.manifest import read_manifest, split_counts, validate_manifest
from medm2g.core.data.paired_dataset import PairedDataset, collate_samples
from medm2g.core.errors import DataError


def write_csv(path, header, *rows):
    path.write_text("\n".join([",".join(header), *(",".join(r) for r in rows)]) + "\n")
    return path


@pytest.fixture()
def images(tmp_path, installed):
    for name in ("a.png", "b.png"):
        installed["xray"].write(torch.zeros(1, 64, 64), tmp_path / name)
    return tmp_path


def test_csv_records_keep_modalities_splits_slices_and_metadata(images, installed):
    path = write_csv(images / "m.csv", ["subject_id", "split", "slice", "xray", "text", "age"],
                     ["S1", "train", "", "a.png", "No acute findings.", "71"],
                     ["S2", "", "3", "b.png", "", "64"])
    manifest = validate_manifest(read_manifest(path, installed), installed)
    assert manifest.modalities == ("xray", "text")
    first, second = manifest.records
    assert first.values == {"xray": "a.png", "text": "No acute findings."} and first.metadata == {"age": "71"}
    assert second.split == "train" and second.slice_index == 3 and not second.has("text")
    assert [r.subject_id for r in manifest.having("xray", "text")] == ["S1"]
    assert split_counts(manifest, ["xray"]) == {"train": 2}


def test_jsonl_reads_the_same(images, installed):
    path = images / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"subject_id": "S1", "xray": "a.png", "split": "test"}]))
    (record,) = read_manifest(path, installed).records
    assert (record.subject_id, record.split, record.values) == ("S1", "test", {"xray": "a.png"})


def test_problems_are_reported_with_their_rows(images, installed):
    path = write_csv(images / "m.csv", ["subject_id", "split", "xray"],
                     ["S1", "train", "a.png"], ["S2", "train", "missing.png"], ["S1", "train", "a.png"],
                     ["S3", "train", "b.png"], ["S3", "test", "b.png"], ["", "train", "a.png"])
    with pytest.raises(DataError) as error:
        validate_manifest(read_manifest(path, installed), installed)
    message = str(error.value)
    assert message.startswith(f"{path}: 4 problem(s): ")
    assert "row 2: xray file not found: missing.png" in message
    assert "row 3: duplicate of row 1" in message
    assert "subject S3 is in several splits: train (row 4), test (row 5)" in message
    assert "row 6: empty subject_id" in message


def test_a_misspelled_modality_column_is_an_error(images, installed):
    path = write_csv(images / "m.csv", ["subject_id", "xary"], ["S1", "a.png"])
    with pytest.raises(DataError, match="column 'xary' is not an installed modality \\(did you mean 'xray'"):
        read_manifest(path, installed)


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("m.csv", "xray\na.png\n", "missing column 'subject_id'"),
    ("m.csv", "subject_id,age\nS1,3\n", "no column names an installed modality"),
    ("m.csv", "subject_id,xray,slice\nS1,a.png,top\n", "row 1: slice must be an integer, got 'top'"),
    ("m.jsonl", '{"subject_id": "S1"}\n{oops\n', "line 2: not JSON"),
    ("m.xlsx", "", "unsupported manifest type .xlsx"),
    ("m.csv", "subject_id,xray\n", "the manifest has no records"),
])
def test_unusable_manifests_say_why(tmp_path, installed, name, content, expected):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=expected):
        read_manifest(path, installed)


def test_the_paired_dataset_serves_the_phantoms_key_slices(phantom_cohort, installed):
    out, _ = phantom_cohort
    manifest = validate_manifest(read_manifest(out / "data" / "ct-mri.csv", installed), installed)
    dataset = PairedDataset(manifest, ("ct", "mri"), installed, split=None)
    item = dataset[0]
    assert item["ct"].shape == (1, 64, 64) and item["mri"].shape == (1, 64, 64)
    assert item["subject_id"] == manifest.records[0].subject_id
    batch = collate_samples([dataset[i] for i in range(min(2, len(dataset)))])
    assert batch["ct"].shape[1:] == (1, 64, 64) and isinstance(batch["subject_id"], list)
    text_xray = PairedDataset(read_manifest(out / "data" / "text-xray.csv", installed), ("text", "xray"),
                              installed, split=None)
    sample = text_xray[0]
    assert sample["text"].startswith("Findings:") and sample["xray"].shape == (1, 64, 64)
    with pytest.raises(DataError, match="no train-split record has text and mri"):
        PairedDataset(read_manifest(out / "data" / "text-xray.csv", installed), ("text", "mri"), installed)


def test_parquet_reads_the_same(images, installed):
    parquet = pytest.importorskip("pyarrow.parquet")
    import pyarrow

    path = images / "m.parquet"
    parquet.write_table(pyarrow.table({"subject_id": ["S1"], "xray": ["a.png"], "split": ["val"]}), path)
    (record,) = read_manifest(path, installed).records
    assert (record.subject_id, record.split, record.values) == ("S1", "val", {"xray": "a.png"})
