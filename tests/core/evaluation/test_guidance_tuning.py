"""`medm2g tune-guidance`: a scale per task chosen on validation subjects, then used by generation."""

import json
import shutil

import pytest

from medm2g.core.apps.cli import main
from medm2g.core.errors import CheckpointError
from medm2g.core.generation.backends import CrossGuidedGenerator, GenerationRequest
from medm2g.core.generation.conditions import Condition
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.registry import load_modalities


@pytest.fixture()
def run_copy(tiny_trained_run, tmp_path):
    """A copy: the tuned scales would change what the shared run generates for other tests."""
    return shutil.copytree(tiny_trained_run, tmp_path / "run")


def test_each_paired_task_gets_the_best_scale_on_validation_subjects_and_generation_uses_it(run_copy, capsys):
    assert main(["tune-guidance", str(run_copy), "--scales", "4", "1", "--subjects", "4", "--steps", "2",
                 "--task", "text:xray", "--task", "xray:ct"]) == 0
    record = json.loads((run_copy / "guidance.json").read_text())
    assert record["settings"]["scales"] == [1.0, 4.0] and record["settings"]["split"] == "val"
    tuned = record["tasks"]["text:xray"]
    assert tuned["subjects"] == 4 and tuned["objective"] == "ssim"  # blobs have no finding reader
    by_scale = {float(s): row["objective"] for s, row in tuned["by_scale"].items()}
    assert tuned["scale"] == max(sorted(by_scale), key=by_scale.get)
    assert by_scale[1.0] != by_scale[4.0]  # the scale changed the samples
    assert "xray:ct" in record["skipped"] and "xray:ct" not in record["tasks"]  # never paired: no validation pairs
    assert "| text:xray |" in capsys.readouterr().out

    run = TrainedRun.open(run_copy, load_modalities(), device="cpu")
    assert run.tuned_guidance == {("text", "xray"): tuned["scale"]}
    generator = CrossGuidedGenerator(run)
    report = [Condition("text", "a report", "r")]
    default = run.config.diffusion.guidance_scale
    assert generator.guidance_scales(GenerationRequest(["xray", "ct"], report)) == {"xray": tuned["scale"], "ct": default}
    assert generator.guidance_scales(GenerationRequest(["xray"], report, guidance_scale=7.0)) == {"xray": 7.0}
    assert generator.guidance_scales(GenerationRequest(["xray", "ct"], report, joint=True)) == {
        "xray": default, "ct": default}
    assert generator.guidance_scales(GenerationRequest(["xray"])) == {"xray": 1.0}  # unconditional: the null context
    assert main(["eval", str(run_copy), "--task", "text:xray", "--subjects", "2", "--steps", "2"]) == 0
    settings = json.loads((run_copy / "eval" / "generation.json").read_text())["settings"]
    assert settings["guidance"] == {"text:xray": tuned["scale"]}  # the evaluation says which scales it used


def test_bad_scales_and_a_broken_record_are_one_line_errors(run_copy, capsys):
    assert main(["tune-guidance", str(run_copy), "--scales", "0", "2", "--steps", "2"]) != 0
    assert "--scales must be positive" in capsys.readouterr().err
    assert main(["tune-guidance", str(run_copy), "--task", "ct:mri", "--steps", "2"]) != 0
    assert "ct:mri: not a task of this run" in capsys.readouterr().err
    (run_copy / "guidance.json").write_text(json.dumps({"tasks": {"text:xray": {"scale": "strong"}}}))
    with pytest.raises(CheckpointError, match="guidance.json: tasks.<source:target>.scale must be a number"):
        TrainedRun.open(run_copy, load_modalities(), device="cpu").tuned_guidance
