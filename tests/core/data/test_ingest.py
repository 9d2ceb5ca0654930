"""medm2g ingest: every readable file becomes a record, every other one a reason."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydicom.data import get_testdata_file

from medm2g.core.data.ingest import ingest
from medm2g.core.data.manifest import read_manifest, validate_manifest
from medm2g.core.errors import DataError

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent


def test_a_mixed_folder_keeps_the_good_files_and_reports_the_rest(tmp_path, installed):
    folder = tmp_path / "incoming"
    (folder / "nested").mkdir(parents=True)
    installed["xray"].write(torch.rand(1, 64, 64) * 2 - 1, folder / "chest.png")
    (folder / "nested" / "scan.dcm").write_bytes(Path(get_testdata_file("RG1_J2KR.dcm")).read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    report = ingest(folder, installed["xray"], tmp_path / "out" / "xray.csv")
    assert report.records == 2 and report.files_seen == 4
    reasons = dict(report.skipped)
    assert reasons[str(folder / "broken.png")].startswith("not a readable image")
    assert reasons[str(folder / "ct.dcm")] == "DICOM Modality is CT, not one xray reads (CR, DX, RG)"
    with report.skip_report.open() as handle:
        assert len(list(csv.DictReader(handle))) == 2
    manifest = validate_manifest(read_manifest(report.manifest, installed), installed)
    assert sorted(Path(r.values["xray"]).name for r in manifest.records) == ["chest.png", "scan.dcm"]


def test_single_frame_series_become_one_volume_record(tmp_path, installed):
    report = ingest(TEST_FILES / "dicomdirtests" / "77654033", installed["ct"], tmp_path / "ct.csv")
    manifest = validate_manifest(read_manifest(report.manifest, installed), installed)
    paths = [Path(r.values["ct"]).name for r in manifest.records]
    assert "CT2" in paths and manifest.records[0].subject_id == "77654033"
    assert all(reason.startswith("DICOM Modality is CR") for _, reason in report.skipped)


def test_no_readable_file_is_an_error(tmp_path, installed):
    (tmp_path / "a.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable ct file among 1 candidates \\(not a readable image"):
        ingest(tmp_path, installed["ct"], tmp_path / "m.csv")


def test_the_cli_summarises_skips_by_reason_without_pydicoms_chatter(tmp_path):
    """A real process: under pytest, logging goes to pytest's handler and would hide the chatter."""
    result = subprocess.run([sys.executable, "-m", "medm2g.core.apps.cli", "ingest", str(TEST_FILES), "--modality", "mri",
                             "--out", str(tmp_path / "mri.csv")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "mri records from" in result.stdout and "x DICOM Modality is CT, not one mri reads (MR)" in result.stdout
    assert "every skipped file and its reason:" in result.stdout
    assert "implicit VR" not in result.stderr, result.stderr[:300]

