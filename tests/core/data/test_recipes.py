"""Dataset recipes on small fake trees in each published layout, awkward cases included: the manifests
they write pass the manifest validation, `medm2g plan` reads their graphs, and what they skip says why."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medm2g.core.data.manifest import read_manifest, validate_manifest
from medm2g.core.data.recipes import run_recipe
from medm2g.core.data.recipes.mimic_cxr import report_text
from medm2g.core.errors import ConfigError, DataError

FINDINGS = "FINDINGS: There is a focal opacity in the right lower lobe.\n\nIMPRESSION: Right lower lobe pneumonia.\n"


def _jpg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 40), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _check(out: Path, graph: Path, installed) -> None:
    """The graph loads and its manifests validate (every file they name exists and reads as listed)."""
    from medm2g.core.apps.cli import main

    for manifest in (out / "data").glob("*.csv"):
        if manifest.name != "skipped.csv":
            validate_manifest(read_manifest(manifest, installed), installed)
    assert main(["plan", str(graph)]) == 0


@pytest.fixture()
def mimic(tmp_path):
    root = tmp_path / "mimic-cxr-jpg"
    metadata, split = [], []
    studies = {  # study -> views (None: no file), report text
        "50000001": ({"PA": True, "LATERAL": True}, FINDINGS),
        "50000002": ({"AP": True}, "FINDINGS: No acute process.\n"),  # no impression: kept
        "50000003": ({"LATERAL": True}, FINDINGS),  # lateral only: skipped
        "50000004": ({"PA": True}, "WET READ: ___ called to the ward.\n"),  # no sections: skipped
        "50000005": ({"PA": False}, FINDINGS),  # image missing: skipped
    }
    for subject_index in range(8):
        subject = f"1{subject_index:07d}"
        official = "test" if subject_index == 0 else "validate" if subject_index == 1 else "train"
        for study, (views, report) in studies.items():
            study = f"{study}{subject_index}"
            folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
            for view, present in views.items():
                dicom_id = f"d{study}{view.lower()}"
                metadata.append({"dicom_id": dicom_id, "subject_id": subject, "study_id": study, "ViewPosition": view})
                split.append({"dicom_id": dicom_id, "study_id": study, "subject_id": subject, "split": official})
                if present:
                    _jpg(folder / f"{dicom_id}.jpg", int(study) + len(view))
            path = root / "mimic-cxr-reports" / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("                                 FINAL REPORT\n EXAMINATION: CHEST\n\n" + report)
    for name, rows in (("mimic-cxr-2.0.0-metadata.csv", metadata), ("mimic-cxr-2.0.0-split.csv", split)):
        with (root / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root


def test_mimic_cxr_keeps_a_frontal_view_and_the_report_sections_per_study(mimic, tmp_path, installed):
    out = tmp_path / "out"
    summary = run_recipe("mimic-cxr", mimic, out)
    train, test = _rows(out / "data" / "text-xray.csv"), _rows(out / "data" / "test.csv")
    assert len(train) == 14 and len(test) == 2  # 8 patients x 2 usable studies; patient 0 is the official test
    assert {row["split"] for row in train} == {"train", "val"} and {row["subject_id"] for row in test} == {"p10000000"}
    by_study = {row["study_id"][:-1]: row for row in train if row["subject_id"] == "p10000003"}
    both = by_study["s50000001"]  # a PA and a lateral view: the PA is taken
    assert both["view"] == "PA" and both["xray"].endswith("pa.jpg") and both["split"] == "train"
    assert both["text"] == ("Findings: There is a focal opacity in the right lower lobe. "
                            "Impression: Right lower lobe pneumonia.")
    assert both["xray"].startswith("../../mimic-cxr-jpg/files/p10/p10000003/")  # relative to out/data/
    assert by_study["s50000002"]["view"] == "AP" and by_study["s50000002"]["text"] == "Findings: No acute process."
    assert summary.skipped == {"no frontal view": 8, "no FINDINGS or IMPRESSION section": 8, "image file missing": 8}
    assert {row["reason"] for row in _rows(summary.skip_report)} >= {"no frontal view: only LATERAL"}
    _check(out, summary.graph, installed)


def test_the_report_sections_are_read_by_their_headers():
    assert report_text("FINDINGS:\n  a\n  b\nIMPRESSION: c") == "Findings: a b Impression: c"
    assert report_text("IMPRESSION: only this.") == "Impression: only this."
    assert report_text("INDICATION: cough.\nCOMPARISON: none.") is None


def test_iu_xray_reads_the_xml_reports_and_mixed_case_image_names(tmp_path, installed):
    root = tmp_path / "iu"
    (root / "ecgen-radiology").mkdir(parents=True)
    projections = []
    for number in range(1, 25):
        frontal, lateral = f"CXR{number}_1_IM-00{number:02d}-1001", f"CXR{number}_1_IM-00{number:02d}-2001"
        for name, seed in ((frontal, number), (lateral, 100 + number)):
            _jpg(root / "NLMCXR_png" / f"{name}.PNG" if number == 2 else root / "NLMCXR_png" / f"{name}.png", seed)
        projections += [{"uid": number, "filename": f"{frontal}.png", "projection": "Frontal"},
                        {"uid": number, "filename": f"{lateral}.png", "projection": "Lateral"}]
        impression = "" if number == 4 else '<AbstractText Label="IMPRESSION">No active disease.</AbstractText>'
        findings = "" if number == 5 else '<AbstractText Label="FINDINGS">The heart is normal in size.</AbstractText>'
        if number == 5:
            impression = ""
        order = (lateral, frontal) if number == 6 else (frontal, lateral)
        (root / "ecgen-radiology" / f"{number}.xml").write_text(
            f'<eCitation><uId id="CXR{number}"/><MedlineCitation><Article><Abstract>{findings}{impression}'
            f'</Abstract></Article></MedlineCitation>'
            + "".join(f'<parentImage id="{name}"><caption>x</caption></parentImage>' for name in order)
            + "</eCitation>")
    projections = [p for p in projections if not (p["uid"] == 3 and p["projection"] == "Frontal")]
    with (root / "indiana_projections.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["uid", "filename", "projection"])
        writer.writeheader()
        writer.writerows(projections)
    (root / "ecgen-radiology" / "broken.xml").write_text("<eCitation><uId")
    out = tmp_path / "out"
    summary = run_recipe("iu-xray", root, out)
    rows = _rows(out / "data" / "text-xray.csv") + _rows(out / "data" / "test.csv")
    by_subject = {row["subject_id"]: row for row in rows}
    assert len(rows) == 22 and "CXR3" not in by_subject and "CXR5" not in by_subject  # lateral only; no sections
    assert by_subject["CXR2"]["xray"].endswith("-1001.PNG")  # the upper-case name found
    assert by_subject["CXR6"]["xray"].endswith("-1001.png")  # frontal by the table, though listed second
    assert by_subject["CXR4"]["text"] == "Findings: The heart is normal in size."
    assert summary.skipped == {"no frontal view": 1, "no FINDINGS or IMPRESSION section": 1, "not readable XML": 1}
    assert "test" in {row["split"] for row in rows} and "train" in {row["split"] for row in rows}
    _check(out, summary.graph, installed)


def _volume(installed, modality: str, path: Path, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    installed[modality].write(torch.rand(4, 1, 32, 32, generator=generator) * 2 - 1, path)


def test_synthrad_pairs_mr_and_ct_per_patient_with_or_without_a_mask(tmp_path, installed):
    root = tmp_path / "synthrad"
    for number in range(1, 13):
        patient = root / "Task1" / "brain" / f"1BA{number:03d}"
        patient.mkdir(parents=True)
        upper = number == 2
        _volume(installed, "ct", patient / ("CT.nii.gz" if upper else "ct.nii.gz"), number)
        if number != 3:
            _volume(installed, "mri", patient / ("MR.nii.gz" if upper else "mr.nii.gz"), 100 + number)
        if number not in (2, 4):
            _volume(installed, "ct", patient / "mask.nii.gz", 200 + number)
    out = tmp_path / "out"
    summary = run_recipe("synthrad", root, out)
    rows = _rows(out / "data" / "ct-mri.csv") + _rows(out / "data" / "test.csv")
    assert sorted(row["subject_id"] for row in rows) == [f"1BA{n:03d}" for n in range(1, 13) if n != 3]
    by_subject = {row["subject_id"]: row for row in rows}
    assert by_subject["1BA002"]["mri"].endswith("MR.nii.gz") and by_subject["1BA002"]["mask"] == ""
    assert by_subject["1BA001"]["mask"].endswith("1BA001/mask.nii.gz") and by_subject["1BA001"]["site"] == "brain"
    assert summary.skipped == {"no MR image beside the CT": 1}
    assert summary.notes[-1] == "2 of 11 patients have no mask (kept; the mask column is empty)"
    _check(out, summary.graph, installed)


def test_gold_atlas_pairs_dicom_series_folders(tmp_path, installed):
    root = tmp_path / "gold-atlas"
    for number in range(1, 11):
        patient = root / f"1_{number:02d}_P"
        _volume(installed, "ct", patient / "CT.dcm", number)  # a multi-slice .dcm becomes a series folder
        _volume(installed, "mri", patient / "MR.dcm", 50 + number)
    out = tmp_path / "out"
    summary = run_recipe("gold-atlas", root, out)
    rows = _rows(out / "data" / "ct-mri.csv") + _rows(out / "data" / "test.csv")
    assert len(rows) == 10 and all(Path(out / "data" / row["ct"]).is_dir() for row in rows)
    assert "intensity_windows:\n  ct:\n  - -160\n  - 240" in summary.graph.read_text()
    _check(out, summary.graph, installed)


def test_a_folder_that_is_not_the_dataset_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no mimic-cxr-2.0.0-split.csv or mimic-cxr-2.0.0-split.csv.gz"):
        run_recipe("mimic-cxr", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(DataError, match=r"synthrad: no usable records \(nothing matched\); is this the dataset"):
        run_recipe("synthrad", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ConfigError, match=r"unknown recipe 'chexpert' \(recipes: mimic-cxr, iu-xray"):
        run_recipe("chexpert", tmp_path, tmp_path / "out")


def test_medm2g_train_accepts_a_recipes_graph(tmp_path, installed):
    """The issue's done-when: a recipe's manifests train with `medm2g train --config quick`."""
    from medm2g.core.apps.cli import main

    root = tmp_path / "synthrad"
    for number in range(1, 9):
        patient = root / "Task1" / "pelvis" / f"1PA{number:03d}"
        _volume(installed, "ct", patient / "ct.nii.gz", number)
        _volume(installed, "mri", patient / "mr.nii.gz", 100 + number)
    assert main(["ingest", str(root), "--recipe", "synthrad", "--out", str(tmp_path / "data")]) == 0
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "data" / "synthrad.yaml"), "--config", "quick", "--out", str(run),
                 "--device", "cpu"]) == 0
    assert len(list((run / "stages").glob("*/record.json"))) == 6  # align, 2 VAEs, 2 LDMs, the round
    # an MRI-only recipe's graph (single-modality data): the prompt encoder by the visual invariant, VAE, LDM
    ixi = tmp_path / "ixi"
    for number in range(2, 10):
        _volume(installed, "mri", ixi / "IXI-T1" / f"IXI{number:03d}-IOP-09{number:02d}-T1.nii.gz", number)
    assert main(["ingest", str(ixi), "--recipe", "ixi", "--out", str(tmp_path / "ixi-data")]) == 0
    mri_run = tmp_path / "mri-run"
    assert main(["train", str(tmp_path / "ixi-data" / "ixi.yaml"), "--config", "quick", "--out", str(mri_run),
                 "--device", "cpu"]) == 0
    assert sorted(p.parent.name for p in (mri_run / "stages").glob("*/record.json")) == [
        "01-alignment-mri", "02-vae-mri", "03-ldm-mri"]


def test_ixi_and_brats_make_an_mri_only_graph_of_one_contrast(tmp_path, installed):
    from medm2g.core.apps.cli import main

    ixi = tmp_path / "ixi"
    for number in range(2, 12):
        for contrast in ("T1", "T2"):
            name = f"IXI{number:03d}-Guys-08{number:02d}-{contrast}.nii.gz"
            _volume(installed, "mri", ixi / f"IXI-{contrast}" / name, number)
    (ixi / "IXI-T1" / "README.txt").write_text("not an image")
    out = tmp_path / "ixi-out"
    assert main(["ingest", str(ixi), "--recipe", "ixi", "--contrast", "T2", "--out", str(out)]) == 0
    rows = _rows(out / "data" / "mri.csv") + _rows(out / "data" / "test.csv")
    assert len(rows) == 10 and all(row["mri"].endswith("-T2.nii.gz") and row["site"] == "Guys" for row in rows)
    graph = (out / "ixi.yaml").read_text()
    assert "pairs: []" in graph and "single_modality:\n- modality: mri\n  dataset: data/mri.csv" in graph
    _check(out, out / "ixi.yaml", installed)

    brats = tmp_path / "brats"
    for number in range(1, 11):
        patient = brats / f"BraTS2021_{number:05d}"
        for contrast in ("t1", "flair") if number != 3 else ("flair",):
            name = f"{patient.name}_{contrast}.nii.gz" if number != 4 else f"{patient.name}_{contrast.upper()}.NII.GZ"
            _volume(installed, "mri", patient / name, number)
        if number != 5:
            _volume(installed, "mri", patient / f"{patient.name}_seg.nii.gz", 50 + number)
    summary = run_recipe("brats", brats, tmp_path / "brats-out", contrast="t1")
    rows = _rows(tmp_path / "brats-out" / "data" / "mri.csv") + _rows(tmp_path / "brats-out" / "data" / "test.csv")
    assert sorted(row["subject_id"] for row in rows) == [f"BraTS2021_{n:05d}" for n in range(1, 11) if n != 3]
    assert summary.skipped == {"no t1 image (other contrasts present)": 1}
    assert summary.notes[-1] == "1 of 9 patients have no mask (kept; the mask column is empty)"
    with pytest.raises(ConfigError, match=r"--contrast 't1ce': IXI has t1, t2, pd"):
        run_recipe("ixi", ixi, tmp_path / "x", contrast="t1ce")
