"""`medm2g eval` on a tiny trained run: every ordered pair scored against the held-out truth."""

import json

import pytest
import torch

from medm2g.core.apps.cli import main
from medm2g.core.evaluation.generation_eval import score_samples


def test_eval_scores_every_ordered_pair_and_marks_the_never_paired(tiny_trained_run, capsys):
    assert main(["eval", str(tiny_trained_run), "--subjects", "4", "--steps", "2"]) == 0
    record = json.loads((tiny_trained_run / "eval" / "generation.json").read_text())
    tasks = {(t["source"], t["target"]): t for t in record["tasks"]}
    assert set(tasks) == {(a, b) for a in ("ct", "text", "xray") for b in ("ct", "text", "xray") if a != b}
    assert tasks[("text", "xray")]["trained_together"] and not tasks[("xray", "ct")]["trained_together"]
    for (source, target), task in tasks.items():
        assert task["subjects"] == 4
        scores = task["scores"]
        if target == "text":
            from medm2g.core.metrics.coco_caption import COCO_METRICS, coco_available

            coco = set(COCO_METRICS) if coco_available() else set()  # the [metrics] extra, in the test extra
            assert set(scores) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"} | coco
            assert all(0 <= value <= 1 for key, value in scores.items() if key != "coco_cider")
            assert all(scores[key] >= 0 for key in coco)
        else:
            assert set(scores) == {"psnr", "ssim", "ms_ssim", "fid"}  # blobs are no phantom: no finding reader
            assert 0 < scores["psnr"] < 60 and -1 <= scores["ssim"] < 1 and 0 <= scores["ms_ssim"] < 1
            assert scores["fid"] >= 0 and task["fid_features"] == f"FID[medm2g C_{task['target']}]"
    assert record["settings"]["command"].endswith("--subjects 4 --steps 2")
    assert (tiny_trained_run / "eval" / "generation.png").stat().st_size > 5000
    assert (tiny_trained_run / "eval" / "retrieval.json").is_file()
    out = capsys.readouterr().out
    assert "| xray -> ct | no | 4 |" in out and "rouge_l" in out


def test_the_truth_scored_against_itself_is_perfect_and_differs_from_a_shuffle():
    generator = torch.Generator().manual_seed(0)
    images = [torch.nn.functional.avg_pool2d(torch.rand(1, 1, 32, 32, generator=generator), 3, 1, 1)[0] * 2 - 1
              for _ in range(4)]
    perfect = score_samples(images, images)
    assert perfect["ssim"] == pytest.approx(1.0) and perfect["ms_ssim"] == pytest.approx(1.0)
    assert perfect["psnr"] == float("inf")
    shuffled = score_samples(images[1:] + images[:1], images)
    assert shuffled["ssim"] < 0.5 and shuffled["psnr"] < 20
    reports = ["Findings: a 30 mm infarct in the left frontal lobe.", "Findings: a mass in the right occipital lobe.",
               "Findings: No focal lesion is identified. Impression: Normal brain.",
               "Findings: haemorrhage in the left temporal lobe."]
    itself = score_samples(reports, reports)
    assert itself["bleu_4"] == pytest.approx(1.0)
    assert itself["kind_accuracy"] == itself["side_accuracy"] == itself["region_accuracy"] == 1.0
    assert itself["kind_chance"] == pytest.approx(0.25)  # four different kinds, each once
    shuffled = score_samples(reports[1:] + reports[:1], reports)
    assert shuffled["rouge_l"] < 0.8 and shuffled["kind_accuracy"] == 0.0


def test_eval_without_subjects_is_a_one_line_error(tiny_trained_run, capsys):
    assert main(["eval", str(tiny_trained_run), "--subjects", "0"]) == 1
    assert "eval: --subjects must be at least 1, got 0" in capsys.readouterr().err


def test_eval_scores_only_the_tasks_asked_for(tiny_trained_run, capsys):
    assert main(["eval", str(tiny_trained_run), "--subjects", "2", "--steps", "2", "--task", "xray:ct"]) == 0
    record = json.loads((tiny_trained_run / "eval" / "generation.json").read_text())
    assert [(t["source"], t["target"]) for t in record["tasks"]] == [("xray", "ct")]
    assert record["settings"]["tasks"] == ["xray:ct"]
    assert main(["eval", str(tiny_trained_run), "--task", "mri:ct"]) == 1
    error = capsys.readouterr().err
    assert "mri:ct: not a task of this run and manifest" in error and "text:xray" in error
    with pytest.raises(SystemExit):
        main(["eval", str(tiny_trained_run), "--task", "mri-ct"])


def test_reports_get_the_coco_caption_table_beside_medm2gs_own_or_the_install_hint():
    from medm2g.core.evaluation.generation_eval import TaskScore, format_generation_scores
    from medm2g.core.metrics.coco_caption import COCO_METRICS

    own = {"bleu_1": 0.5, "bleu_2": 0.4, "bleu_3": 0.3, "bleu_4": 0.2, "rouge_l": 0.45}
    coco = {metric: 0.1 * (i + 1) for i, metric in enumerate(COCO_METRICS)}
    table = format_generation_scores([TaskScore("ct", "text", True, 8, {**own, **coco})])
    assert "| ct -> text | 8 | 0.100 | 0.200 | 0.300 | 0.400 | 0.500 | 0.600 |" in table
    assert "| source -> target | n | bleu_1 | bleu_2 | bleu_3 | bleu_4 | rouge_l | cider |" in table
    without = format_generation_scores([TaskScore("ct", "text", True, 8, own)])
    assert "pip install 'medm2g[metrics]' (pycocoevalcap)" in without and "cider" not in without
