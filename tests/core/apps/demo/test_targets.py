"""The demo's targets: read from the evaluation's rows, pooled where the bar is pooled, met or not."""

import pytest

from medm2g.core.apps.demo.targets import demo_targets, format_targets
from medm2g.core.metrics.proportion import wilson_interval


def side_row(source, target, right, n, chance=0.5, ceiling=0.94, psnr=15.0):
    low, high = wilson_interval(right, n)
    return {"source": source, "target": target, "scores": {
        "psnr": psnr, "side_accuracy": right / n, "side_accuracy_low": low, "side_accuracy_high": high,
        "side_accuracy_n": n, "side_chance": chance, "side_ceiling": ceiling}}


def report_row(source, contradicting, n):
    return {"source": source, "target": "text", "scores": {
        "bleu_1": 0.5, "contradiction": contradicting / n, "contradiction_n": n}}


def test_each_target_is_read_from_its_task_and_judged_against_its_bar():
    generation = [side_row("text", "ct", 85, 100), side_row("mri", "ct", 40, 78, psnr=18.2),
                  report_row("ct", 1, 100), report_row("xray", 0, 100), report_row("mri", 4, 100)]
    baselines = {"mri->ct": [{"model": "medm2g", "scores": {"psnr": 18.2}, "subjects": 100},
                             {"model": "pix2pix-style L1 UNet", "scores": {"psnr": 24.7}, "subjects": 100}]}
    targets = demo_targets(generation, baselines, seconds=1200.0)
    assert targets["text_to_ct_side"]["value"] == 0.85 and targets["text_to_ct_side"]["met"]
    assert targets["text_to_ct_side"]["truth"] == 0.94 and targets["text_to_ct_side"]["n"] == 100
    assert targets["mri_to_ct_side"]["value"] == pytest.approx(40 / 78) and not targets["mri_to_ct_side"]["met"]
    gap = targets["mri_to_ct_psnr_gap"]
    assert gap["value"] == pytest.approx(-6.5) and not gap["met"] and gap["baseline"] == 24.7
    pooled = targets["report_contradiction"]  # 5 of 300 reports, one interval over all of them
    assert pooled["value"] == pytest.approx(5 / 300) and pooled["met"] and pooled["n"] == 300
    assert (pooled["low"], pooled["high"]) == pytest.approx(wilson_interval(5, 300))
    assert targets["minutes"]["value"] == 20.0 and not targets["minutes"]["met"]
    table = format_targets(targets)
    assert "| mri_to_ct_psnr_gap | -6.50 dB (18.20 against 24.70) | 100 |" in table and table.count("**no**") == 3


def test_a_task_the_run_does_not_have_leaves_its_key_out():
    targets = demo_targets([report_row("ct", 0, 10)], {}, seconds=60.0)
    assert set(targets) == {"report_contradiction", "minutes"} and targets["minutes"]["met"]
