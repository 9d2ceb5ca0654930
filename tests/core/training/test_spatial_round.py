"""A round between two imaging modalities trains its spatial guidance, saves it, and generation uses it."""

import csv

import attrs
import pytest
import torch

from medm2g.core.apps.cli import main
from medm2g.core.config.run_config import load_run_config
from medm2g.core.generation.backends import CrossGuidedGenerator, GenerationRequest
from medm2g.core.generation.conditions import Condition
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.graph.engine import ParamGroup, Part
from medm2g.core.io.checkpoints import load_tensors, read_json
from medm2g.core.training.cross_guided import build_round
from medm2g.core.training.engine import Engine
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import Run, load_run_plan

from ..conftest import TINY_RUN_CONFIG, blob_image, report

GRAPH = """\
name: blobs-translation
center: text
modalities: [text, xray, ct]
pairs:
  - {a: text, b: ct, dataset: data/text-ct.csv}
  - {a: ct, b: xray, dataset: data/ct-xray.csv}
"""


def _volume(image: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.full((1, 64, 64), -0.8), image, torch.full((1, 64, 64), -0.8)])


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory, installed):
    """Text-CT and CT-X-ray pairs of blob images (the X-ray is the CT's blob, brighter): every stage, tiny."""
    root = tmp_path_factory.mktemp("spatial")
    generator = torch.Generator().manual_seed(5)
    (root / "data").mkdir()
    (root / "graph.yaml").write_text(GRAPH)
    for group, columns in (("text-ct", ("text", "ct")), ("ct-xray", ("ct", "xray"))):
        rows = []
        for index in range(24):
            subject, finding = f"{group}-{index:02d}", index % 8
            folder = root / "subjects" / subject
            image = blob_image(finding, generator)
            row = {"subject_id": subject, "split": "val" if index < 4 else "train", "slice": 1}
            if "text" in columns:
                row["text"] = report(finding)
            if "ct" in columns:
                installed["ct"].write(_volume(image), folder / "ct.nii.gz")
                row["ct"] = f"../subjects/{subject}/ct.nii.gz"
            if "xray" in columns:
                installed["xray"].write((image * 1.2).clamp(-1, 1), folder / "xray.png")
                row["xray"] = f"../subjects/{subject}/xray.png"
            rows.append(row)
        with (root / "data" / f"{group}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["subject_id", "split", "slice", *columns])
            writer.writeheader()
            writer.writerows(rows)
    config = root / "tiny.yaml"
    config.write_text(TINY_RUN_CONFIG.replace("steps: 3, batch_size: 8}\ndiffusion",
                                              "steps: 8, batch_size: 8, spatial_width: 8}\ndiffusion"))
    run = root / "run"
    assert main(["train", str(root / "graph.yaml"), "--out", str(run), "--config", str(config), "--device", "cpu"]) == 0
    return run, root


def test_the_imaging_round_trains_and_saves_both_directions(translation_run):
    run, _ = translation_run
    layout = RunLayout(run)
    round_record = read_json(next((run / "stages").glob("*cross_guided-ct-xray*")) / "record.json")
    assert "ct-xray.spatial_guidance" in round_record["stage"]["trains"]
    assert round_record["weights"]["ct-xray"] == str(layout.spatial_guidance("ct-xray"))
    weights = load_tensors(layout.spatial_guidance("ct-xray"))
    assert {key.split(".")[1] for key in weights} == {"ct_to_xray", "xray_to_ct"}
    zero_convs = [v for k, v in weights.items() if "down_outputs" in k or "mid_output" in k]
    assert zero_convs and all(v.abs().sum() > 0 for v in zero_convs)  # trained away from their zero start
    assert not layout.spatial_guidance("text-ct").exists()  # a report has no place to add


def test_translation_uses_the_spatial_path_and_text_does_not(translation_run, installed, monkeypatch):
    run, root = translation_run
    trained = TrainedRun.open(run, installed, device="cpu")
    assert trained.spatial_guidance("xray", "ct") is not None and trained.spatial_guidance("ct", "xray") is not None
    assert trained.spatial_guidance("text", "ct") is None
    xray = installed["xray"].read(root / "subjects" / "ct-xray-03" / "xray.png")
    request = GenerationRequest(outputs=("ct",), conditions=(Condition("xray", xray, "xray.png"),), steps=3)
    with_path = CrossGuidedGenerator(trained).generate(request)[0].outputs["ct"]
    monkeypatch.setattr(TrainedRun, "spatial_guidance", lambda self, source, target: None)
    without = CrossGuidedGenerator(trained).generate(request)[0].outputs["ct"]
    assert with_path.shape == without.shape
    assert not torch.allclose(with_path, without)


def test_switched_off_the_round_plans_an_empty_group_and_trains_the_rest(translation_run, installed):
    run, _ = translation_run
    layout = RunLayout(run)
    config = load_run_config(layout.config)
    config = attrs.evolve(config, cross_guidance=attrs.evolve(config.cross_guidance, spatial=False))
    registry = config.modalities(installed)
    plan = load_run_plan(layout, registry)
    stage = plan.rounds[1]
    assert ParamGroup("ct-xray", Part.SPATIAL_GUIDANCE) in stage.trains
    round_ = build_round(Run(config, registry, plan, layout, Engine(config.acceleration, torch.device("cpu"))), stage)
    assert len(round_.spatial.paths) == 0
    in_optimizer = [p for group in round_.optimizer.param_groups for p in group["params"]]
    assert len(round_.optimizer.param_groups) == 1 and in_optimizer


def test_joint_sampling_adds_each_others_spatial_guidance(translation_run, installed, monkeypatch):
    run, _ = translation_run
    trained = TrainedRun.open(run, installed, device="cpu")
    request = GenerationRequest(outputs=("ct", "xray"), joint=True, steps=3,
                                conditions=(Condition("text", report(5), "a report"),))
    with_paths = CrossGuidedGenerator(trained).generate(request)[0].outputs
    monkeypatch.setattr(TrainedRun, "spatial_guidance", lambda self, source, target: None)
    without = CrossGuidedGenerator(trained).generate(request)[0].outputs
    assert not torch.allclose(with_paths["ct"], without["ct"]) and not torch.allclose(with_paths["xray"], without["xray"])
