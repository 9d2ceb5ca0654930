"""`backend: vq-ar` end to end on the phantom cohort: the shipped graph trains the codebook, the
alignment and the transformer in one resumable stage, and `medm2g generate` and `medm2g eval`
answer through the same commands and files as the other backends."""

import json

import pytest
import torch

from medm2g.core.apps.cli import main
from medm2g.core.errors import ConfigError, GraphError
from medm2g.core.generation.backends import GenerationRequest, default_backend, generation_backend
from medm2g.core.generation.conditions import Condition
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.graph.pair_graph import structure_pair_graph
from medm2g.core.graph.shipped import resolve_graph_path
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import plan_for

CONFIG = """\
phantom_subjects: 20
grids:
  ct: {image_size: [32, 32]}
vq_ar: {widths: [16, 16, 16], codebook_size: 32, code_dim: 8, codebook_steps: 30, discriminator_start: 15,
        dead_code_restart_every: 10, alignment_dim: 32, alignment_steps: 20, transformer_width: 32,
        transformer_layers: 1, transformer_heads: 2, transformer_steps: 20, batch_size: 6, checkpoint_every: 10}
"""
REPORT = "Findings: There is a haemorrhage in the right frontal lobe."


@pytest.fixture(scope="module")
def vq_ar_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vq-ar")
    (root / "config.yaml").write_text(CONFIG)
    run = root / "run"
    assert main(["train", str(resolve_graph_path("vq-ar-text-ct.yaml")), "--out", str(run),
                 "--config", str(root / "config.yaml"), "--device", "cpu"]) == 0
    return run


@pytest.fixture(scope="module")
def opened(vq_ar_run, installed):
    return TrainedRun.open(vq_ar_run, installed, device="cpu")


def test_the_plan_has_one_vq_ar_stage_and_only_report_to_image_tasks(installed):
    graph = structure_pair_graph({"modalities": ["text", "ct", "mri"], "pairs": [
        {"a": "text", "b": "ct", "dataset": "a.csv", "backend": "vq-ar"},
        {"a": "mri", "b": "ct", "dataset": "b.csv", "backend": "syndiff"}]}, "g.yaml")
    plan = plan_for(graph, installed)
    assert [(s.kind.value, s.modalities) for s in plan.stages] == [
        ("vq_autoregressive", ("text", "ct")), ("adversarial_diffusion", ("mri", "ct"))]
    assert [(t.source, t.target, t.backend) for t in plan.tasks] == [
        ("text", "ct", "vq-ar"), ("mri", "ct", "syndiff"), ("ct", "mri", "syndiff")]


def test_a_vq_ar_edge_between_two_images_is_refused_naming_the_edge(installed):
    graph = structure_pair_graph({"modalities": ["mri", "ct"], "pairs": [
        {"a": "mri", "b": "ct", "dataset": "a.csv", "backend": "vq-ar"}]}, "g.yaml")
    with pytest.raises(GraphError, match=r"g.yaml: pairs\[0\]: backend vq-ar generates an image from a report; "
                                         r"pair one report modality with one imaging modality \(got 'mri' and 'ct'\)"):
        plan_for(graph, installed)


def test_training_writes_one_model_the_phases_and_a_record_and_a_rerun_is_complete(vq_ar_run, capsys):
    layout = RunLayout(vq_ar_run)
    assert layout.translation("text", "ct", backend="vq-ar").is_file()
    (stage_dir,) = (vq_ar_run / "stages").iterdir()
    record = json.loads((stage_dir / "record.json").read_text())
    assert record["stage"]["kind"] == "vq_autoregressive" and record["stage"]["backend"] == "vq-ar"
    assert record["steps"] == 70 and record["records"] == 15  # 16 training subjects, 1 of them validation
    assert {"l1", "psnr", "codes_used", "perplexity"} <= set(record["codebook"])
    assert record["last_losses"]["transformer"]["loss"] > 0 and record["vocabulary"] == "head"
    for phase in ("codebook", "alignment", "transformer"):
        assert (stage_dir / f"{phase}.safetensors").is_file() and (stage_dir / f"{phase}-curves.png").is_file()
        assert not (stage_dir / f"{phase}-state.safetensors").exists()
    capsys.readouterr()
    assert main(["train", str(resolve_graph_path("vq-ar-text-ct.yaml")), "--out", str(vq_ar_run),
                 "--config", str(vq_ar_run.parent / "config.yaml"), "--device", "cpu"]) == 0
    assert "1 vq_autoregressive text-ct: already complete" in capsys.readouterr().out


def test_generation_is_reproducible_per_seed_and_the_default_backend_for_a_report(opened):
    request = GenerationRequest(outputs=["ct"], conditions=[Condition("text", REPORT, "report")],
                                samples_per_condition=2, seed=5)
    assert opened.translatable() == [("text", "ct")] and default_backend(opened, request) == "vq-ar"
    backend = generation_backend("vq-ar", opened)
    first = backend.generate(request)
    again = backend.generate(request)
    assert [s.seed for s in first] == [5, 6] and first[0].outputs["ct"].shape == (1, 32, 32)
    assert all(torch.equal(a.outputs["ct"], b.outputs["ct"]) for a, b in zip(first, again))
    (alone,) = backend.generate(GenerationRequest(outputs=["ct"], conditions=request.conditions, seed=6))
    # the same tokens; decoding one image or two differs by float rounding only
    assert torch.allclose(alone.outputs["ct"], first[1].outputs["ct"], atol=1e-5)
    assert backend.prompts(request) == ["haemorrhage in the right frontal lobe"]
    assert backend.describe(request)["prompts"] == ["haemorrhage in the right frontal lobe"]  # into generation.json


def test_what_vq_ar_cannot_do_is_refused_before_sampling(opened):
    backend = generation_backend("vq-ar", opened)
    report = [Condition("text", REPORT, "report")]
    with pytest.raises(ConfigError, match="vq-ar draws one token per grid position, not diffusion steps"):
        backend.generate(GenerationRequest(outputs=["ct"], conditions=report, steps=10))
    with pytest.raises(ConfigError, match="no classifier-free guidance"):
        backend.generate(GenerationRequest(outputs=["ct"], conditions=report, guidance_scale=2.0))
    with pytest.raises(ConfigError, match=r"no vq-ar model for ct->text \(it can generate: text->ct\)"):
        backend.generate(GenerationRequest(outputs=["text"], conditions=[Condition("ct", torch.zeros(1, 32, 32), "x")]))


def test_eval_gives_the_vq_ar_row_and_the_alignment_against_chance_with_heat_maps(vq_ar_run, capsys):
    assert main(["eval", str(vq_ar_run), "--subjects", "4", "--device", "cpu"]) == 0
    scores = json.loads((vq_ar_run / "eval" / "generation.json").read_text())
    (task,) = scores["tasks"]
    assert (task["source"], task["target"], task["backend"]) == ("text", "ct", "vq-ar")
    assert {"psnr", "side_accuracy", "side_chance", "side_ceiling"} <= set(task["scores"])
    measured = json.loads((vq_ar_run / "eval" / "vq-ar.json").read_text())["text->ct"]
    hits = measured["alignment"]
    assert measured["subjects"] == 4 and 1 <= hits["hit_on_image_n"] <= 4
    assert 0 < hits["chance"] < 1 and 0 <= hits["hit_as_key_low"] <= hits["hit_as_key"] <= hits["hit_as_key_high"]
    assert measured["codebook"]["perplexity"] >= 1
    assert "lesion term's top patch in the lesion" in (vq_ar_run / "eval" / "vq-ar.md").read_text()
    assert (vq_ar_run / "eval" / "vq-ar-heat-maps-ct.png").stat().st_size > 10_000
