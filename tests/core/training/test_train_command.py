"""`medm2g train` runs every stage of the plan once and resumes a finished run as complete."""

import json

from medm2g.core.cli import main

TINY = """\
size: tiny
embed_dim: 32
alignment: {steps: 3, batch_size: 8}
vae: {steps: 3, batch_size: 8}
ldm: {steps: 3, batch_size: 8}
cross_guidance: {width: 32, heads: 2, steps: 3, batch_size: 8}
diffusion: {sampling_steps: 4}
"""


def test_train_runs_every_stage_in_the_plans_order_then_resumes_as_complete(blob_cohort, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    run = tmp_path / "run"
    arguments = ["train", str(blob_cohort / "blobs.yaml"), "--out", str(run), "--config", str(config), "--device", "cpu"]
    assert main(arguments) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("stage")]
    titles = [line.split(":")[0].split(maxsplit=2)[2] for line in lines]
    assert titles == ["alignment text-xray", "alignment text-ct", "vae text", "vae xray", "vae ct",
                      "ldm text", "ldm xray", "ldm ct", "cross_guided text-xray", "cross_guided text-ct"]
    plan = json.loads((run / "plan.json").read_text())
    assert len(plan["stages"]) == len(titles)
    for modality in ("text", "xray", "ct"):
        assert (run / "models" / modality / "denoiser.safetensors").is_file()
    assert (run / "models" / "xray" / "cross_guided.safetensors").is_file()
    assert (run / "models" / "ct" / "cross_guided.safetensors").is_file()
    assert not list(run.glob("stages/*/state.safetensors"))  # every stage finished

    assert main(arguments) == 0
    assert capsys.readouterr().out.count("already complete") == len(titles)
