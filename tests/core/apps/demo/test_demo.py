"""`medm2g demo` end to end at a tiny size: every output file exists and holds sane values."""

import json

import numpy as np
import pytest
from PIL import Image

DEMO_ADDITIONS = """\
phantom_subjects: 40
"""
"""Beside the suite's tiny run config: a small phantom cohort (the CT window is the shipped graph's)."""
TASKS = {"text-to-xray", "text-to-ct", "text-to-mri", "xray-to-text", "ct-to-text", "mri-to-text", "mri-to-ct",
         "text-to-xray-ct-mri-joint"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_run_config):
    from medm2g.core.apps.cli import main

    folder = tmp_path_factory.mktemp("demo")
    config = folder / "tiny.yaml"
    config.write_text(tiny_run_config + DEMO_ADDITIONS)
    out = folder / "demo"
    assert main(["demo", "--out", str(out), "--config", str(config), "--subjects", "4", "--headline-subjects", "6",
                 "--device", "cpu"]) == 0
    return out


def test_the_demo_writes_the_report_the_metrics_and_a_picture_of_everything(demo):
    for name in ("report.md", "metrics.json", "plan.png", "curves.png", "eval/generation.png", "eval/retrieval.png"):
        assert (demo / name).is_file(), name
    assert {p.name for p in (demo / "samples").iterdir()} == TASKS
    for task in TASKS:
        grid = np.asarray(Image.open(demo / "samples" / task / "grid.png").convert("L"), dtype=float)
        assert grid.std() > 1.0, task  # a picture, not a blank canvas
        assert json.loads((demo / "samples" / task / "generation.json").read_text())["seed"] == 0


def test_the_metrics_are_sane_and_say_how_to_reproduce_them(demo):
    metrics = json.loads((demo / "metrics.json").read_text())
    assert metrics["command"].startswith("medm2g demo --out ") and metrics["seed"] == 0
    assert metrics["config"]["grids"]["ct"]["intensity_window"] == [-100.0, 200.0]  # graphs/medm2g.yaml's
    assert len(metrics["stages"]) == 16 and metrics["seconds"]["total"] > 0  # the paper's 14, SynDiff, vq-ar
    others = [t for t in metrics["generation"] if t["backend"] != "medm2g"]  # three-systems.yaml's other backends
    assert [(t["source"], t["target"], t["backend"]) for t in others] == [
        ("mri", "ct", "syndiff"), ("ct", "mri", "syndiff"), ("text", "ct", "vq-ar")]
    assert all(np.isfinite(t["scores"]["psnr"]) and t["subjects"] == (4 if t["source"] == "ct" else 6) for t in others)
    images = [t for t in metrics["generation"] if "psnr" in t["scores"] and t["backend"] == "medm2g"]
    reports = [t for t in metrics["generation"] if "bleu_1" in t["scores"]]
    assert len(images) == 9 and len(reports) == 3  # 4 sources x 3 targets, text targets from 3 imaging sources
    for task in images:
        scores = task["scores"]
        assert np.isfinite(scores["psnr"]) and -1 <= scores["ssim"] <= 1 and 0 <= scores["ms_ssim"] <= 1
        assert np.isfinite(scores["fid"]) and scores["fid"] >= 0
        assert task["fid_features"] == f"FID[medm2g C_{task['target']}]"
        assert 0 <= scores["side_accuracy"] <= 1 and 0 <= scores["side_chance"] <= 1  # the phantom's image reader
        assert scores["side_accuracy_low"] <= scores["side_accuracy"] <= scores["side_accuracy_high"]
        headline = (task["source"], task["target"]) in {("text", "ct"), ("mri", "ct")}
        assert task["subjects"] == (6 if headline else 4)
        assert 0 < scores["side_accuracy_n"] <= task["subjects"]
    for task in reports:  # every report task is a headline task
        assert 0 <= task["scores"]["bleu_4"] <= task["scores"]["bleu_1"] <= 1 and task["subjects"] == 6
    baselines = metrics["translation_baselines"]["mri->ct"]  # beside mri -> ct, on the same subjects
    assert [row["model"].split(" ")[0] for row in baselines] == ["medm2g", "syndiff", "pix2pix-style", "ct"]
    assert all(row["subjects"] == 6 and np.isfinite(row["scores"]["psnr"]) for row in baselines)
    targets = metrics["targets"]
    judged = sum(int(t["scores"].get("contradiction_n", 0)) for t in reports)  # a tiny run's reports are rarely readable
    assert set(targets) == {"text_to_ct_side", "mri_to_ct_side", "mri_to_ct_psnr_gap", "minutes"} | (
        {"report_contradiction"} if judged else set())
    mri_ct = next(t for t in images if (t["source"], t["target"]) == ("mri", "ct"))
    assert targets["mri_to_ct_side"]["value"] == mri_ct["scores"]["side_accuracy"]  # medm2g's, not SynDiff's
    assert targets["mri_to_ct_psnr_gap"]["value"] == pytest.approx(
        mri_ct["scores"]["psnr"] - baselines[2]["scores"]["psnr"])
    if judged:
        assert targets["report_contradiction"]["n"] == judged <= 18
    assert targets["minutes"]["value"] == pytest.approx(metrics["seconds"]["total"] / 60)
    ladder = metrics["finding_ladder"]  # where the finding is lost: every rung, with its n
    assert set(ladder["condition"]) == {"text", "xray", "ct", "mri"}
    assert ladder["condition"]["text"]["kind"]["accuracy_n"] == 6  # the ladder reads the headline subjects
    assert set(ladder["vae"]) == {"xray", "ct", "mri"}
    assert all(0 < ladder["vae"][m]["vae"]["psnr"] < 60 and -1 <= ladder["vae"][m]["vae"]["ssim"] <= 1 for m in ladder["vae"])
    assert set(ladder["oracle"]) == {"ct"} and ladder["oracle"]["ct"]["side_accuracy_n"] > 0  # the demo's default
    assert {"text -> ct", "mri -> ct"} <= set(ladder["generation"])
    assert (demo / "eval" / "finding-ladder.md").is_file()
    for row in metrics["retrieval"]:
        assert 0 <= row["recall"]["1"] <= row["recall"]["5"] <= 1
    vq_ar = metrics["vq_ar"]["text->ct"]  # the third seed system's codebook and alignment
    assert vq_ar["subjects"] == 6 and 0 < vq_ar["alignment"]["chance"] < 1
    assert Image.open(metrics["pictures"]["vq_ar_heat_maps_text->ct"]).size[0] > 300
    for sample in metrics["samples"]:
        generated = [np.asarray(Image.open(p)) for p in (demo / "samples").glob(
            f"{sample['folder'].rsplit('/', 1)[-1]}/row-*/*.png")]
        assert all(image.std() > 0 for image in generated), sample["task"]  # not constant


def test_the_report_shows_every_section_and_links_pictures_that_exist(demo):
    report = (demo / "report.md").read_text()
    for heading in ("## The plan", "## Training", "## Cross-modal retrieval", "## Generation against the held-out truth",
                    "## Where the finding is lost", "## Samples of every task", "## Reproduce", "## Targets",
                    "## mri -> ct beside its baselines", "## vq-ar: anatomy-pathology prompts"):
        assert heading in report
    assert "medm2g as evaluated above, syndiff (the run's own syndiff edge), a pix2pix-style" in report
    assert "not Inception FID" in report
    links = [line.split("](", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert len(links) >= 4 + len(TASKS)
    for link in links:
        assert (demo / link).is_file(), link


def test_eval_compares_reports_in_other_words_with_the_template_on_the_same_subjects(demo, tmp_path, capsys):
    import shutil

    from medm2g.core.apps.cli import main

    run = shutil.copytree(demo, tmp_path / "run")  # the demo's own eval/ stays as the tests above read it
    assert main(["eval", str(run), "--task", "text:ct", "--subjects", "6", "--steps", "2", "--other-words", "ct"]) == 0
    reworded = json.loads((run / "eval" / "other-words.json").read_text())["ct"]
    n = reworded["template"]["side_accuracy_n"]
    assert 0 < n <= 6 and reworded["other_words"]["side_accuracy_n"] == n  # the same lesioned subjects
    assert reworded["side_difference"] == pytest.approx(
        reworded["other_words"]["side_accuracy"] - reworded["template"]["side_accuracy"])
    assert all("Impression" in r for r in reworded["examples"]["template"])
    assert not any("Impression" in r for r in reworded["examples"]["other_words"])
    out = capsys.readouterr().out
    assert "reports in other words" in out and "| text -> ct | other words |" in out


def test_the_served_demo_reads_each_generated_image_for_the_stated_finding(demo, installed, tmp_path):
    """`medm2g serve demo`'s page: held-out reports with their truth, and the phantom's reader on each image."""
    from medm2g.core.apps.serve.handlers import PageHandlers
    from medm2g.core.apps.serve.overview import run_overview
    from medm2g.core.apps.serve.served_run import ServedRun

    handlers = PageHandlers(ServedRun.open(demo, installed, tmp_path, device="cpu"))
    assert handlers.reader_choices()[1:] == ["haemorrhage", "infarct", "tumour", "calcification"]
    stated = next(e for e in handlers.report_examples().values() if e.truth is not None and not e.truth.is_normal)
    result = handlers.generate_from_report(stated.value, ["ct", "mri"])
    assert not result.failed, result.status
    for _, caption in result.gallery:
        assert f"the reader, looking for: {stated.truth.kind}, sees it " in caption
        assert "(as stated)" in caption or f"(stated: {stated.truth.side} {stated.truth.region}; side " in caption
    other_kind = next(kind for kind in handlers.reader_choices()[1:] if kind != stated.truth.kind)
    other = handlers.generate_from_report(stated.value, ["ct"], look_for=other_kind)
    assert f"looking for: {other_kind}" in other.gallery[0][1] and "stated" not in other.gallery[0][1]
    label, example = next((label, e) for label, e in handlers.image_examples().items() if e.slice_index is not None)
    view = handlers.read_example(label)  # the subject's key slice, where its finding is
    assert "truth: " in view.summary and f"slice {example.slice_index} of " in view.summary
    assert "evaluation: generation" in [caption for _, caption in run_overview(demo).pictures]
