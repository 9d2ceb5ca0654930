"""The phantom cohort: deterministic, consistent across modalities, paired as the paper."""

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medm2g.core.errors import DataError
from medm2g.core.phantom.anatomy import TISSUES, SamplingGrid, random_subject
from medm2g.core.phantom.cohort import generate_cohort
from medm2g.core.phantom.overview import load_mask


@pytest.fixture(scope="module")
def cohort(phantom_cohort):
    return phantom_cohort


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((folder / "subjects").rglob("*")) if p.is_file()}


def read_rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_every_modality_and_the_ground_truth_are_written(cohort):
    out, summary = cohort
    assert summary.modalities == ("ct", "mri", "text", "xray")
    files = {p.name for p in (out / "subjects" / "S0000").iterdir()}
    assert {"ct.nii.gz", "mri.nii.gz", "mri_t2.nii.gz", "mri_pd.nii.gz", "xray.png", "text.txt", "finding.json"} <= files
    assert (out / "overview.png").stat().st_size > 50_000
    assert (out / "medm2g.yaml").is_file()


def test_the_cohort_is_deterministic_and_subject_i_does_not_depend_on_n(cohort, tmp_path, installed, paper_graph):
    out, _ = cohort
    again = tmp_path / "again"
    generate_cohort(again, 5, 7, installed, paper_graph)
    first, second = digest(out), digest(again)
    shared = [name for name in second if name.startswith(("subjects/S0000/", "subjects/S0003/"))]
    assert shared and all(first[name] == second[name] for name in shared)


def test_a_different_seed_gives_different_subjects(installed):
    a = random_subject("S", np.random.default_rng(np.random.SeedSequence([1, 0])))
    b = random_subject("S", np.random.default_rng(np.random.SeedSequence([2, 0])))
    assert a != b


def test_the_lesion_is_at_the_same_place_in_ct_and_mri_and_on_the_reported_side(cohort, installed):
    out, _ = cohort
    checked = 0
    for folder in sorted((out / "subjects").iterdir()):
        finding = json.loads((folder / "finding.json").read_text())
        report = (folder / "text.txt").read_text()
        if finding["kind"] == "normal":
            assert "Normal brain" in report
            assert not load_mask(folder / "ct_lesion.nii.gz").any()
            continue
        ct_mask, mri_mask = load_mask(folder / "ct_lesion.nii.gz"), load_mask(folder / "mri_lesion.nii.gz")
        assert ct_mask.any() and np.array_equal(ct_mask, mri_mask)
        assert f"{finding['side']} {finding['region']} lobe" in report
        assert f"{round(finding['diameter_mm'])} mm" in report
        # radiological view: the patient's left is on the image's right half
        column = np.argwhere(ct_mask)[:, 2].mean()
        assert (column > ct_mask.shape[2] / 2) == (finding["side"] == "left")
        xray_mask = load_mask(folder / "xray_lesion.png")
        if xray_mask.any():
            assert (np.argwhere(xray_mask)[:, 1].mean() > xray_mask.shape[1] / 2) == (finding["side"] == "left")
        # the lesion is visible: its mean differs from the rest of the brain on T2 (oedema) or CT
        ct = installed["ct"].read(folder / "ct.nii.gz")[:, 0]
        t2 = installed["mri"].read(folder / "mri_t2.nii.gz")[:, 0]
        brain_ct = (ct > -0.05) & (ct < 0.15) & torch.from_numpy(~ct_mask)
        lesion_ct = ct[torch.from_numpy(ct_mask)].mean()
        contrast = max(abs(lesion_ct - ct[brain_ct].mean()).item() / 0.01,
                       abs(t2[torch.from_numpy(ct_mask)].mean() - t2[brain_ct].mean()).item() / 0.05)
        assert contrast > 0.5, (folder.name, finding["kind"], contrast)
        checked += 1
    assert checked >= 3


def test_manifests_follow_the_papers_pairing_with_disjoint_subjects(cohort):
    out, summary = cohort
    pairs = {"text-xray": {"text", "xray"}, "text-ct": {"text", "ct"}, "ct-mri": {"ct", "mri"}}
    seen: dict[str, str] = {}
    for name, modalities in pairs.items():
        rows = read_rows(out / "data" / f"{name}.csv")
        assert rows and summary.manifests[f"data/{name}.csv"] == len(rows)
        for row in rows:
            present = {m for m in ("ct", "mri", "text", "xray") if row[m]}
            assert present == modalities
            assert row["subject_id"] not in seen, f"{row['subject_id']} in {name} and {seen.get(row['subject_id'])}"
            seen[row["subject_id"]] = name
            assert row["split"] in {"train", "val"}
            assert (out / "data" / row["ct" if row["ct"] else "xray"]).resolve().is_file()
    test_rows = read_rows(out / "data" / "test.csv")
    assert test_rows and all(r["split"] == "test" and all(r[m] for m in ("ct", "mri", "text", "xray")) for r in test_rows)
    assert not {r["subject_id"] for r in test_rows} & set(seen)


def test_fractions_are_a_partition_of_unity_on_any_grid():
    subject = random_subject("S", np.random.default_rng(3))
    fractions = subject.fractions(SamplingGrid.regular((20, 24), 3, (-10.0, 40.0)))
    assert fractions.shape == (len(TISSUES), 3, 20, 24)
    assert torch.allclose(fractions.sum(0), torch.ones(3, 20, 24), atol=1e-5)
    assert fractions.min() >= 0


def test_too_small_a_cohort_is_refused(tmp_path, installed, paper_graph):
    with pytest.raises(DataError, match="at least 5 subjects"):
        generate_cohort(tmp_path, 3, 0, installed, paper_graph)


def test_forked_workers_write_the_same_files_as_one_process(tmp_path, installed, paper_graph):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    generate_cohort(serial, 8, 3, installed, paper_graph, workers=1)
    generate_cohort(parallel, 8, 3, installed, paper_graph, workers=2)
    assert digest(serial) == digest(parallel)
