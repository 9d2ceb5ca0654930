"""`backend: syndiff` end to end: the shipped graph trains unpaired on the phantom cohort, and
`medm2g generate` and `medm2g eval` translate MRI to CT in 4 steps through the same commands."""

import csv
import json

import pytest
import torch

from medm2g.core.apps.cli import main
from medm2g.core.backends.syndiff.stage import build_syndiff
from medm2g.core.backends.syndiff.translation import SynDiffTranslator
from medm2g.core.data.manifest import read_manifest
from medm2g.core.data.paired_dataset import PairedDataset
from medm2g.core.errors import ConfigError
from medm2g.core.generation.backends import GenerationRequest, default_backend, generation_backend
from medm2g.core.generation.conditions import Condition
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.graph.shipped import resolve_graph_path
from medm2g.core.training.layout import RunLayout

CONFIG = """\
phantom_subjects: 25
grids:
  ct: {image_size: [32, 32], intensity_window: [-100, 200]}
  mri: {image_size: [32, 32]}
syndiff: {widths: [16, 32], latent_dim: 16, training_steps: 60, batch_size: 6, checkpoint_every: 30,
          generator_learning_rate: 0.001, discriminator_learning_rate: 0.0005}
"""


@pytest.fixture(scope="module")
def syndiff_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("syndiff")
    (root / "config.yaml").write_text(CONFIG)
    run = root / "run"
    assert main(["train", str(resolve_graph_path("syndiff-mri-ct.yaml")), "--out", str(run),
                 "--config", str(root / "config.yaml"), "--device", "cpu"]) == 0
    return run


@pytest.fixture(scope="module")
def opened(syndiff_run, installed):
    return TrainedRun.open(syndiff_run, installed, device="cpu")


def _held_out(run: TrainedRun, limit: int = 8) -> list[dict]:
    manifest = read_manifest(run.layout.root / "data" / "data" / "test.csv", run.registry)
    dataset = PairedDataset(manifest, ["mri", "ct"], run.registry, split=None)
    return [dataset[i] for i in range(min(limit, len(dataset)))]


def test_the_cohort_of_an_unpaired_edge_never_lists_one_subject_with_both_images(syndiff_run):
    with (syndiff_run / "data" / "data" / "mri-ct-unpaired.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 20  # 25 subjects, every fifth held out
    assert all(bool(row["mri"]) != bool(row["ct"]) for row in rows)
    assert sum(bool(row["mri"]) for row in rows) == 10
    with (syndiff_run / "data" / "data" / "test.csv").open() as handle:
        assert all(row["mri"] and row["ct"] for row in csv.DictReader(handle))  # held out: both, to score against


def test_training_writes_the_model_a_record_and_curves_and_resumes_as_complete(syndiff_run, capsys):
    layout = RunLayout(syndiff_run)
    assert layout.translation("mri", "ct").is_file()
    (stage_dir,) = (syndiff_run / "stages").iterdir()
    record = json.loads((stage_dir / "record.json").read_text())
    assert record["stage"]["kind"] == "adversarial_diffusion" and record["stage"]["backend"] == "syndiff"
    assert record["stage"]["paired_data"] is False
    assert record["images"] == {"mri": 9, "ct": 9}  # the train split: 2 of the 20 are validation
    assert record["steps"] == 60 and {"loss", "critic", "cycle_mri", "cycle_ct"} <= set(record["final"])
    assert (stage_dir / "curves.png").stat().st_size > 5000
    assert not (stage_dir / "state.safetensors").exists()
    assert not (syndiff_run / "encoders").exists()  # nothing of medm2g's own stages ran
    capsys.readouterr()
    assert main(["train", str(resolve_graph_path("syndiff-mri-ct.yaml")), "--out", str(syndiff_run),
                 "--config", str(syndiff_run.parent / "config.yaml"), "--device", "cpu"]) == 0
    assert "1 adversarial_diffusion mri-ct: already complete" in capsys.readouterr().out


def test_short_training_lowers_held_out_mri_to_ct_l1_below_the_untrained_model(opened):
    records = _held_out(opened)
    mri = torch.stack([r["mri"] for r in records])
    ct = torch.stack([r["ct"] for r in records])
    generators = [torch.Generator().manual_seed(i) for i in range(len(records))]
    untrained = build_syndiff(opened.registry, "mri", "ct", opened.config).eval()
    before = float((untrained.translate(mri, "ct", generators) - ct).abs().mean())
    generators = [torch.Generator().manual_seed(i) for i in range(len(records))]
    after = float((SynDiffTranslator(opened).model("mri", "ct").translate(mri, "ct", generators) - ct).abs().mean())
    print(f"held-out MRI->CT L1 ({len(records)} subjects, model space [-1, 1]): untrained {before:.3f}, "
          f"after 60 steps {after:.3f}")
    assert after < 0.8 * before


def test_generate_picks_syndiff_for_a_translation_run_and_records_its_four_steps(syndiff_run, opened, tmp_path):
    source = next((syndiff_run / "data" / "subjects").glob("*/mri.nii.gz"))
    out = tmp_path / "gen"
    assert main(["generate", str(syndiff_run), "--from", f"mri={source}", "--to", "ct", "-n", "2",
                 "--out", str(out)]) == 0
    record = json.loads((out / "generation.json").read_text())
    assert (record["backend"], record["steps"], record["translation"]) == ("syndiff", 4, "mri->ct")
    assert [row["files"] for row in record["rows"]] == [{"ct": "row-000/ct.nii.gz"}, {"ct": "row-001/ct.nii.gz"}]
    image = opened.registry["ct"].read(out / "row-000" / "ct.nii.gz")
    assert image.shape[-2:] == (32, 32)


def test_rows_are_reproducible_alone_and_differ_between_seeds(opened):
    (record,) = _held_out(opened, 1)
    condition = Condition("mri", record["mri"], "mri")
    backend = generation_backend("syndiff", opened)
    both = backend.generate(GenerationRequest(outputs=["ct"], conditions=[condition], samples_per_condition=2, seed=5))
    alone = backend.generate(GenerationRequest(outputs=["ct"], conditions=[condition], seed=6))
    torch.testing.assert_close(both[1].outputs["ct"], alone[0].outputs["ct"], atol=1e-5, rtol=0)  # batching only
    assert not torch.equal(both[0].outputs["ct"], both[1].outputs["ct"])


@pytest.mark.parametrize("change, message", [
    (dict(outputs=["xray"]), "no syndiff model for mri->xray (it can translate: mri->ct, ct->mri)"),
    (dict(steps=10), "syndiff samples in the 4 steps it was trained for"),
    (dict(guidance_scale=2.0), "syndiff has no classifier-free guidance"),
    (dict(conditions=[]), "give --from with images of one modality"),
    (dict(outputs=["ct", "mri"], joint=True), "one modality at a time"),
])
def test_what_syndiff_cannot_do_is_refused_naming_what_it_can(opened, change, message):
    (record,) = _held_out(opened, 1)
    fields = dict(outputs=["ct"], conditions=[Condition("mri", record["mri"], "mri")]) | change
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        generation_backend("syndiff", opened).generate(GenerationRequest(**fields))


def test_the_default_backend_is_medm2g_where_it_can_and_the_translation_edge_elsewhere(opened):
    (record,) = _held_out(opened, 1)
    request = GenerationRequest(outputs=["ct"], conditions=[Condition("mri", record["mri"], "mri")])
    assert default_backend(opened, request) == "syndiff"
    with pytest.raises(ConfigError, match=r"its translation edges do mri->ct, ct->mri \(--backend syndiff\)"):
        generation_backend("medm2g", opened).generate(request)


def test_eval_scores_both_directions_with_the_syndiff_backend_and_no_retrieval(syndiff_run, capsys):
    assert main(["eval", str(syndiff_run), "--subjects", "4"]) == 0
    printed = capsys.readouterr().out
    assert "retrieval" not in printed.split("written:")[0]
    record = json.loads((syndiff_run / "eval" / "generation.json").read_text())
    assert [(t["source"], t["target"], t["backend"], t["subjects"]) for t in record["tasks"]] == [
        ("mri", "ct", "syndiff", 4), ("ct", "mri", "syndiff", 4)]
    assert all(t["scores"]["psnr"] > 5 for t in record["tasks"])
    assert "| mri -> ct | syndiff | yes | 4 |" in printed


def test_the_served_page_offers_the_edge_and_translates_a_held_out_mri_with_it(syndiff_run, installed, tmp_path):
    from medm2g.core.apps.serve.handlers import PageHandlers
    from medm2g.core.apps.serve.served_run import ServedRun

    handlers = PageHandlers(ServedRun.open(syndiff_run, installed, tmp_path, device="cpu"))
    served = handlers.served
    assert served.outputs() == ["ct", "mri"] and served.image_conditions() == ["mri", "ct"]
    assert served.backends("mri", ["ct"]) == ["syndiff"] and served.report_modalities() == []
    label = next(label for label in handlers.image_examples() if label.startswith("mri"))
    view = handlers.read_example(label)
    assert view.read.modality == "mri" and "truth:" in view.summary  # a phantom subject's finding
    result = handlers.generate_from_file(view.read, ["ct"], backend="syndiff")
    assert not result.failed and result.status.startswith("Generated with syndiff: 1 image(s)"), result.status
    assert "the reader, looking for: " in result.gallery[0][1]  # phantom data: the CT reader reads it
    refused = handlers.generate_from_report("Findings: a right frontal haemorrhage.", ["ct"])
    assert "this run cannot condition on a report" in refused.status
