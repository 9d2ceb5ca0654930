"""The ablation's rows, its before-the-rounds runs, its shared VAEs, its table, and the regression baseline."""

import math

import pytest
import torch

from medm2g.core.apps.ablation.runner import BEFORE_ROUNDS, parameter_count, reuse_vaes
from medm2g.core.apps.ablation.table import format_ablation
from medm2g.core.apps.ablation.variants import ENCODER_VARIANTS, ROWS, AblationRow, encoder_variants
from medm2g.core.apps.baselines.regression import train_regression
from medm2g.core.config.run_config import RunConfig, structure_run_config
from medm2g.core.errors import ConfigError
from medm2g.core.evaluation.generation_eval import TaskScore
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.graph.engine import StageKind
from medm2g.core.graph.pair_graph import load_pair_graph
from medm2g.core.metrics.retrieval import RetrievalRow
from medm2g.core.training.history import read_history
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import Run, prepare_run
from medm2g.core.training.trainer import train


def test_there_are_ten_rows_and_each_encoder_variant_changes_only_its_losses_or_prompting():
    assert len(set(ROWS)) == 10 and {r.encoders for r in ROWS} == set(ENCODER_VARIANTS)
    base = RunConfig()
    full, no_vi, vi_only, nothing, prompted = (v.config(base) for v in ENCODER_VARIANTS)
    assert full == base and base.prompting.condition_on_prompts is False
    assert prompted.prompting.condition_on_prompts is True
    assert prompted == __import__("attrs").evolve(base, prompting=prompted.prompting)  # nothing else changes
    assert ENCODER_VARIANTS[-1].name == "ca1-vi1-prompts"
    assert AblationRow(True, True, True, prompts=True).label == "CA+ LCAG+ VI+ prompts"
    assert no_vi.alignment.visual_invariant is False and no_vi.alignment.info_nce_weight == 1.0
    assert vi_only.alignment.info_nce_weight == 0.0 and vi_only.alignment.visual_invariant is True
    assert vi_only.alignment.steps == base.alignment.steps
    assert nothing.alignment.steps == 1  # nothing to optimise: the encoders keep their initialisation
    assert AblationRow(True, False, True).label == "CA+ LCAG- VI+"


def test_encoders_names_a_subset_in_the_ablations_order_and_refuses_unknown_names():
    assert encoder_variants(None) == ENCODER_VARIANTS
    chosen = encoder_variants("ca1-vi1-prompts, ca1-vi1")
    assert [v.name for v in chosen] == ["ca1-vi1", "ca1-vi1-prompts"]  # the full method first: its VAEs are shared
    with pytest.raises(ConfigError, match=r"unknown variant\(s\) ca2-vi1; expected .*ca0-vi0, ca1-vi1-prompts"):
        encoder_variants("ca1-vi1,ca2-vi1")
    with pytest.raises(ConfigError, match="none named"):
        encoder_variants(" , ")


def test_a_run_stopped_before_the_rounds_generates_from_its_ldms_and_shares_its_vaes(blob_cohort, installed, tmp_path,
                                                                                     tiny_run_config):
    config = structure_run_config(__import__("yaml").safe_load(tiny_run_config))
    graph = load_pair_graph(blob_cohort / "blobs.yaml", installed=installed)
    first, second = RunLayout(tmp_path / "first"), RunLayout(tmp_path / "second")
    plan = prepare_run(graph, installed, config, first.root)
    results = train(Run.for_plan(plan, installed, config, first.root), kinds=BEFORE_ROUNDS)
    assert {r.stage.kind for r in results} == BEFORE_ROUNDS
    run = TrainedRun.open(first.root, installed, device="cpu")
    assert run.jointly_generatable() == [] and set(run.generatable()) == {"text", "xray", "ct"}
    prepare_run(graph, installed, config, second.root)
    reuse_vaes(first, second, plan)
    later = train(Run.for_plan(plan, installed, config, second.root), kinds=BEFORE_ROUNDS)
    vae_stages = [r for r in later if r.stage.kind is StageKind.VAE]
    assert vae_stages and all(r.skipped for r in vae_stages)  # copied, not retrained
    assert second.vae("ct").read_bytes() == first.vae("ct").read_bytes()
    counted = parameter_count([first.vae("ct")])
    vae = run.vae("ct")
    assert counted == sum(p.numel() for p in vae.parameters()) + sum(b.numel() for b in vae.buffers())


def _row(ca, lcag, vi, ssim):
    score = TaskScore("mri", "ct", True, 4, {"psnr": 20.0, "ssim": ssim, "ms_ssim": 0.5})
    retrieval = [RetrievalRow("ct", "mri", True, ("ct", "mri"), 10, {1: 0.3, 5: 1.0})]
    return {"row": AblationRow(ca, lcag, vi), "seconds": 12.0, "parameters": 2_500_000,
            "added_parameters": 140_000 if lcag else 0, "retrieval": retrieval, "generation": [score]}


def test_the_table_has_a_line_per_row_with_its_flags_time_and_parameters():
    table = format_ablation([_row(True, True, True, 0.41), _row(False, False, False, 0.12)])
    lines = table.strip().splitlines()
    assert lines[0].startswith("| CA | LCAG | VI | prompts | mri->ct PSNR | mri->ct SSIM |")
    assert lines[2].startswith("| yes | yes | yes | - | 20.00 | 0.410 |") and lines[2].endswith("| 12 | 2.50M (+0.14M) |")
    assert lines[3].startswith("| - | - | - | - | 20.00 | 0.120 |") and "(+0.00M)" in lines[3]
    assert "| 2.000 |" in lines[2]  # R@5 1.0 against chance 0.5 among 10 subjects


@pytest.fixture(scope="module")
def cohort_of_40(tmp_path_factory, installed, paper_graph):
    from medm2g.core.phantom.cohort import generate_cohort

    out = tmp_path_factory.mktemp("cohort40")
    generate_cohort(out, 40, 3, installed, paper_graph)
    return out


def test_the_regression_baseline_learns_mri_to_ct_and_resumes_from_its_weights(cohort_of_40, installed, tmp_path):
    out = cohort_of_40
    graph = load_pair_graph(out / "medm2g.yaml", installed=installed)
    weights = tmp_path / "regression.safetensors"
    model, record = train_regression(graph, "mri", "ct", installed, steps=40, batch_size=4, learning_rate=1e-3,
                                     seed=0, device=torch.device("cpu"), weights=weights)
    assert record["steps"] == 40 and record["final_l1"] < 0.25 and math.isfinite(record["seconds"])
    again, resumed = train_regression(graph, "mri", "ct", installed, steps=40, batch_size=4, learning_rate=1e-3,
                                      seed=0, device=torch.device("cpu"), weights=weights)
    assert resumed == record
    probe = torch.zeros(1, 1, 64, 64)
    torch.testing.assert_close(again(probe), model(probe))
    with pytest.raises(ValueError, match="no paired dataset of xray and mri"):
        train_regression(graph, "xray", "mri", installed, 1, 2, 1e-3, 0, torch.device("cpu"), tmp_path / "x.safetensors")


def test_the_syndiff_baseline_trains_at_the_ldm_budget_and_is_loaded_not_retrained(cohort_of_40, installed,
                                                                                     tmp_path, monkeypatch):
    from medm2g.core.apps.baselines import comparison
    from medm2g.core.graph.engine import build_plan

    graph = load_pair_graph(cohort_of_40 / "medm2g.yaml", installed=installed)
    config = structure_run_config({"ldm": {"steps": 3, "batch_size": 2},
                                   "syndiff": {"widths": [16], "latent_dim": 8, "training_steps": 999}})
    run = TrainedRun(installed, config, RunLayout(tmp_path / "run"), torch.device("cpu"))
    model, record = comparison.train_syndiff_baseline(run, build_plan(graph), "mri", "ct", tmp_path)
    assert (record["steps"], record["batch_size"]) == (3, 2)  # the LDM's budget, not syndiff.training_steps
    assert record["images"]["mri"] == record["images"]["ct"] > 0
    history = read_history(tmp_path / "syndiff-mri-ct" / "history.jsonl")
    assert [row["step"] for row in history] == [0, 1, 2]
    monkeypatch.setattr(comparison, "fit_syndiff", lambda *a, **k: pytest.fail("retrained a saved baseline"))
    again, same = comparison.train_syndiff_baseline(run, build_plan(graph), "mri", "ct", tmp_path)
    assert same == record
    probe = torch.zeros(1, 1, 64, 64)
    torch.testing.assert_close(again.translate(probe, "ct", [torch.Generator().manual_seed(0)]),
                               model.translate(probe, "ct", [torch.Generator().manual_seed(0)]))
