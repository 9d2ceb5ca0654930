"""What the page of `medm2g serve` does, called without a browser on the suite's tiny run."""

from __future__ import annotations

import shlex
import sys
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from medm2g.core.apps.serve.display import picture, window_of
from medm2g.core.apps.serve.handlers import STATED, PageHandlers
from medm2g.core.apps.serve.overview import run_overview
from medm2g.core.apps.serve.served_run import ServedRun
from medm2g.core.io.inspect_file import inspect_file

REPORT = "Findings: a lesion is seen in the right frontal lobe. Impression: right lesion."
LABEL_COLOUR = np.array([255, 210, 60])


@pytest.fixture(scope="module")
def handlers(tiny_trained_run, installed, tmp_path_factory):
    served = ServedRun.open(tiny_trained_run, installed, tmp_path_factory.mktemp("serve-work"), device="cpu")
    return PageHandlers(served)


def labelled(image: np.ndarray) -> bool:
    """True when the picture has the label band (the label's yellow) along its top edge."""
    top = image[: image.shape[0] // 8].reshape(-1, 3).astype(int)
    return bool((np.abs(top - LABEL_COLOUR).sum(axis=1) < 60).any())


def test_the_page_offers_what_the_run_can_do(handlers):
    served = handlers.served
    assert served.outputs() == ["ct", "text", "xray"]  # the blob graph: text, x-ray and CT
    assert served.report_modalities() == ["text"] and served.image_conditions() == ["ct", "xray"]
    assert handlers.windows() == ["default", "brain", "subdural", "bone"]  # CT's named windows
    assert handlers.reader_choices() == [STATED]  # blob data have no known findings: no reader
    assert served.backends("ct", ["xray"]) == ["medm2g"]  # no translation edge in this run
    examples = handlers.report_examples()
    assert len(examples) == 16 and all(e.modality == "text" for e in examples.values())
    assert "lesion" in next(iter(examples.values())).value  # the report itself, ready to type in


def test_a_report_gives_synthetic_images_with_dicom_nifti_and_png_downloads(handlers):
    steps = []
    result = handlers.generate_from_report(REPORT, ["ct", "xray"], samples=2, seed=5,
                                           on_step=lambda done, total: steps.append((done, total)))
    assert not result.failed, result.status
    assert result.status.startswith("Generated with medm2g: 4 image(s)") and "synthetic" in result.status
    assert [caption.split(",")[0] for _, caption in result.gallery] == ["synthetic ct", "synthetic xray"] * 2
    assert all(image.shape == (256, 256, 3) and labelled(image) for image, _ in result.gallery)
    assert "no finding reader" in result.gallery[0][1]
    assert "- row 1, synthetic xray: no finding reader" in result.reports  # said beside the pictures too
    assert steps[-1] == (4, 4) and len(steps) == 2 * 4  # each output's reverse process, step by step
    names = sorted(Path(f).relative_to(result.generated.folder).as_posix() for f in result.files)
    expected = [f"row-00{row}/{modality}.{suffix}" for row in (0, 1) for modality in ("ct", "xray")
                for suffix in ("png", "dcm", "nii.gz")]
    assert names == sorted(["generation.json", *expected])
    dicom = pydicom.dcmread(result.generated.folder / "row-001" / "ct.dcm")
    assert dicom.ConversionType == "SYN" and "medm2g" in dicom.DerivationDescription
    assert "seed 6" in dicom.DerivationDescription  # row 1 of seed 5
    for path in ("row-000/ct.nii.gz", "row-000/ct.png", "row-000/xray.png"):
        found = inspect_file(result.generated.folder / path)
        assert found.synthetic and found.provenance.seed == 5, path


def test_every_image_is_offered_in_three_formats_with_the_same_pixels(handlers):
    result = handlers.generate_from_report(REPORT, ["ct"], seed=1)
    folder = result.generated.folder
    assert {Path(f).name for f in result.files} == {"generation.json", "ct.nii.gz", "ct.dcm", "ct.png"}
    registry = handlers.served.registry
    read = {suffix: registry["ct"].read(folder / "row-000" / f"ct{suffix}") for suffix in (".nii.gz", ".dcm")}
    assert torch.allclose(read[".nii.gz"], read[".dcm"], atol=2e-3)  # both hold HU, quantised alike


def test_the_command_line_the_page_shows_makes_the_same_samples(handlers, tmp_path):
    from medm2g.core.apps.cli import main

    result = handlers.generate_from_report(REPORT, ["ct"], seed=3)
    command = result.status.split("`")[1]
    assert command.startswith("medm2g generate ") and command.endswith(" --out OUT")
    argv = shlex.split(command)[1:-1] + [str(tmp_path / "cli"), "--device", "cpu"]
    assert main(argv) == 0
    read = handlers.served.registry["ct"].read
    page, cli = result.generated.folder / "row-000" / "ct.nii.gz", tmp_path / "cli" / "row-000" / "ct.nii.gz"
    assert torch.equal(read(page), read(cli))


def test_a_real_ct_dicom_is_recognised_and_said_back_as_read(handlers):
    ct = pydicom.data.get_testdata_file("CT_small.dcm")
    view = handlers.read_file(ct)
    assert view.read is not None, view.status
    assert view.read.modality == "ct" and "DICOM Modality CT" in view.summary
    assert "axial" in view.summary and "-1000..1000 HU" in view.summary
    assert view.preview.shape == (256, 256, 3) and labelled(view.preview)
    result = handlers.generate_from_file(view.read, ["text", "xray"])
    assert not result.failed, result.status
    assert "synthetic text report" in result.reports and len(result.gallery) == 1
    assert ct not in result.generated.folder.joinpath("generation.json").read_text()  # named by hash only


def test_a_nifti_without_a_modality_is_taken_for_the_runs_only_volume(handlers, blob_cohort):
    path = next((blob_cohort / "subjects").glob("*/ct.nii.gz"))
    view = handlers.read_file(path)
    assert view.read.modality == "ct" and "the only volume modality" in view.summary
    assert "stored LPS" in view.summary and "slice 1 of 3" in view.summary  # the middle one
    assert "slice 0 of 3" in handlers.read_file(path, slice_index="0").summary
    assert "expected a whole number" in handlers.read_file(path, slice_index="top").status
    assert "ct.nii.gz: --slice 7 is outside its 3 slices" in handlers.read_file(path, slice_index=7).status


def test_bad_input_is_said_on_the_page_and_the_page_keeps_working(handlers, tmp_path):
    broken = tmp_path / "uploads" / "broken.dcm"
    broken.parent.mkdir()
    broken.write_bytes(b"\0" * 300)
    view = handlers.read_file(broken)
    assert view.read is None and view.status.startswith("**Not done:** broken.dcm: not a DICOM file")
    assert str(tmp_path) not in view.status  # the file as the person named it, not the server's folder
    mr = handlers.read_file(pydicom.data.get_testdata_file("MR_small.dcm"))
    assert "DICOM Modality MR: this run conditions on none that reads it" in mr.status
    assert "cannot condition on 'mri'" in handlers.read_file(broken, chosen="mri").status
    refusals = {
        "the report has 10001 characters; the page takes at most 10000": handlers.generate_from_report(
            "x" * 10_001, ["ct"]),
        "the report is empty": handlers.generate_from_report("   ", ["ct"]),
        "choose at least one modality": handlers.generate_from_report(REPORT, []),
        "guidance scale 'lots'": handlers.generate_from_report(REPORT, ["ct"], guidance="lots"),
        "samples must be 1 to 4": handlers.generate_from_report(REPORT, ["ct"], samples=9),
        "cannot generate 'mri'": handlers.generate_from_report(REPORT, ["mri"]),
        "no input yet": handlers.generate_from_file(None, ["ct"]),
    }
    for expected, result in refusals.items():
        assert result.failed and result.status.startswith("**Not done:**") and expected in result.status, result.status
    assert not handlers.generate_from_report(REPORT, ["ct"]).failed


def test_two_visitors_at_once_are_served_one_after_the_other(handlers):
    results = [None, None]

    def visit(i):
        results[i] = handlers.generate_from_report(REPORT, ["ct"], seed=11)

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(not r.failed for r in results)
    assert np.array_equal(results[0].gallery[0][0], results[1].gallery[0][0])  # the same seed, the same sample


def test_the_window_changes_the_picture_not_the_sample(handlers):
    result = handlers.generate_from_report(REPORT, ["ct"], seed=2)
    default, bone = handlers.gallery(result.generated), handlers.gallery(result.generated, "bone")
    assert not np.array_equal(default[0][0], bone[0][0])
    assert "window bone -500..1300 HU (saturated past the run's window)" in bone[0][1]


def test_pictures_map_the_named_window_onto_black_to_white(installed):
    spec = installed["ct"].spec  # window -1000..1000 HU
    name, (low, high) = window_of(spec, "brain")
    assert name == "brain 0..80 HU" and (low, high) == pytest.approx((0.0, 0.08))
    ramp = torch.linspace(-1, 1, 64).expand(1, 64, 64)
    image = picture(ramp, spec, "brain")
    row = image[128, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all()
    assert window_of(spec, "no such window")[0] == "-20..100 HU"  # not CT's: its default window


def test_the_run_at_a_glance_gathers_its_pictures_and_tables(tmp_path):
    run = tmp_path / "run"
    (run / "stages" / "01-vae-ct").mkdir(parents=True)
    (run / "eval").mkdir()
    for path in (run / "plan.png", run / "stages" / "01-vae-ct" / "curves.png", run / "eval" / "generation.png"):
        Image.new("L", (8, 8)).save(path)
    assert "No evaluation yet: `medm2g eval" in run_overview(run).tables
    (run / "eval" / "generation.md").write_text("| task | psnr |\n|---|---|\n| text -> ct | 12.0 |\n")
    overview = run_overview(run)
    assert overview.plan_picture == run / "plan.png"
    assert [caption for _, caption in overview.pictures] == ["stage 01-vae-ct: loss curves", "evaluation: generation"]
    assert overview.tables.startswith("### generation") and "| text -> ct | 12.0 |" in overview.tables


def test_the_page_builds_with_every_control_the_browser_test_drives(handlers):
    pytest.importorskip("gradio")
    from medm2g.core.apps.serve.page import build_page

    page = build_page(handlers)
    ids = {block.elem_id for block in page.blocks.values()}
    assert {"report-text", "report-outputs", "report-generate", "report-images", "report-downloads", "report-status",
            "image-upload", "image-read-status", "image-generate", "run-tables"} <= ids


def test_without_gradio_the_command_says_how_to_install_it(monkeypatch, capsys, tiny_trained_run):
    from medm2g.core.apps.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert main(["serve", str(tiny_trained_run)]) == 1
    assert "pip install 'medm2g[serve]'" in capsys.readouterr().err
