"""Alignment training on the generated blob set: what trains, what stays frozen, what it achieves."""

from __future__ import annotations

import attrs
import pytest
import torch

from medm2g.core.config.run_config import AlignmentConfig, RunConfig
from medm2g.core.errors import ConfigError
from medm2g.core.graph.engine import StageKind
from medm2g.core.graph.pair_graph import load_pair_graph
from medm2g.core.io.checkpoints import load_tensors, read_json
from medm2g.core.training import alignment as alignment_module
from medm2g.core.training.alignment import align, evaluate_alignment, run_alignment_stage
from medm2g.core.training.encoders import build_prompt_encoder, resolve_device
from medm2g.core.training.engine import Engine
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import Run, prepare_run


def tiny_config(steps: int = 4, **alignment) -> RunConfig:
    settings = {"steps": steps, "batch_size": 16, "learning_rate": 1e-3, "checkpoint_every": 2, "warmup_steps": 2,
                **alignment}
    return RunConfig(size="tiny", embed_dim=32, seed=1, device="cpu", alignment=AlignmentConfig(**settings))


def plan_for(blob_cohort, installed, config, run_dir):
    graph = load_pair_graph(blob_cohort / "blobs.yaml", installed=installed)
    return prepare_run(graph, installed, config, run_dir)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


def changed_tensors(before: dict[str, torch.Tensor], module: torch.nn.Module) -> list[str]:
    after = module.state_dict()
    return [name for name, tensor in before.items() if not torch.equal(tensor, after[name])]


def test_a_stage_changes_only_the_encoders_it_trains(blob_cohort, installed, tmp_path):
    config = tiny_config(steps=3)
    plan = plan_for(blob_cohort, installed, config, tmp_path)
    first, second = plan.stages_of(StageKind.ALIGNMENT)
    encoders = {m: build_prompt_encoder(installed, m, config) for m in ("text", "xray", "ct")}
    layout, device = RunLayout(tmp_path), Engine(config.acceleration, resolve_device("cpu"))

    before_first = {m: snapshot(e) for m, e in encoders.items()}
    run_alignment_stage(Run(config, installed, plan, layout, device), first, encoders)  # text-xray, both train
    for modality in ("text", "xray"):
        assert changed_tensors(before_first[modality], encoders[modality]), modality

    before_second = {m: snapshot(e) for m, e in encoders.items()}
    run_alignment_stage(Run(config, installed, plan, layout, device), second, encoders)  # text-ct, text frozen
    after = {m: e.state_dict() for m, e in encoders.items()}
    for name, tensor in before_second["text"].items():  # weights and buffers bit-identical
        assert torch.equal(tensor, after["text"][name]), name
    for name, tensor in before_second["xray"].items():
        assert torch.equal(tensor, after["xray"][name]), name
    changed = changed_tensors(before_second["ct"], encoders["ct"])
    assert any(name.startswith("backbone.") for name in changed) and any(name.startswith("projection.") for name in changed)


def test_the_record_says_what_the_stage_did(blob_cohort, installed, tmp_path):
    config = tiny_config(steps=2)
    plan = plan_for(blob_cohort, installed, config, tmp_path)
    align(Run.for_plan(plan, installed, config, tmp_path))
    layout = RunLayout(tmp_path)
    record = read_json(layout.stage_record(plan.stages[1]))  # text-ct
    assert record["stage"]["trains"] == ["ct.prompt_encoder"]
    assert record["stage"]["frozen"] == ["text.prompt_encoder", "xray.prompt_encoder"]
    assert record["stage"]["visual_invariant"] == ["ct"]
    assert record["records"] == 40  # 48 text-ct subjects less 8 validation
    assert record["config"]["alignment"]["steps"] == 2 and record["datasets"] == ["data/text-ct.csv"]
    assert set(record["final"]) >= {"loss", "info_nce", "vi_ct", "temperature"}
    assert layout.stage_curves(plan.stages[1]).stat().st_size > 1000
    assert not layout.stage_state(plan.stages[1]).exists()  # the resumable state is dropped when done
    assert len(layout.stage_history(plan.stages[1]).read_text().splitlines()) == 2


def test_switching_the_visual_invariant_off_drops_its_term(blob_cohort, installed, tmp_path):
    config = tiny_config(steps=2, visual_invariant=False)
    plan = plan_for(blob_cohort, installed, config, tmp_path)
    align(Run.for_plan(plan, installed, config, tmp_path))
    record = read_json(RunLayout(tmp_path).stage_record(plan.stages[0]))
    assert record["stage"]["visual_invariant"] == []
    assert not any(key.startswith("vi_") for key in record["final"])
    assert record["final"]["loss"] == pytest.approx(record["final"]["info_nce"])


def test_a_stopped_run_resumes_to_the_same_weights(blob_cohort, installed, tmp_path, monkeypatch):
    config = tiny_config(steps=5)
    reference = tmp_path / "uninterrupted"
    align(Run.for_plan(plan_for(blob_cohort, installed, config, reference), installed, config, reference))

    stopped = tmp_path / "stopped"
    plan = plan_for(blob_cohort, installed, config, stopped)
    real_make_batch, calls = alignment_module.make_batch, {"n": 0}

    def make_batch_then_stop(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5 + 4:  # stage 2, step 4: after its checkpoint at step 2
            raise KeyboardInterrupt
        return real_make_batch(*args, **kwargs)

    monkeypatch.setattr(alignment_module, "make_batch", make_batch_then_stop)
    with pytest.raises(KeyboardInterrupt):
        align(Run.for_plan(plan, installed, config, stopped))
    assert RunLayout(stopped).stage_state(plan.stages[1]).is_file()
    monkeypatch.setattr(alignment_module, "make_batch", real_make_batch)
    results = align(Run.for_plan(plan, installed, config, stopped))
    assert [r.skipped for r in results] == [True, False]

    for modality in ("text", "xray", "ct"):
        expected = load_tensors(RunLayout(reference).encoder(modality))
        resumed = load_tensors(RunLayout(stopped).encoder(modality))
        assert expected.keys() == resumed.keys()
        for name in expected:
            assert torch.equal(expected[name], resumed[name]), f"{modality}: {name}"
    history = RunLayout(stopped).stage_history(plan.stages[1]).read_text().splitlines()
    assert len(history) == 5


def test_a_run_folder_refuses_a_different_config(blob_cohort, installed, tmp_path):
    plan_for(blob_cohort, installed, tiny_config(steps=2), tmp_path)
    plan_for(blob_cohort, installed, attrs.evolve(tiny_config(steps=2), device="cuda"), tmp_path)
    with pytest.raises(ConfigError, match=r"alignment.steps: 2 -> 3"):
        plan_for(blob_cohort, installed, tiny_config(steps=3), tmp_path)


@pytest.mark.slow
def test_alignment_raises_held_out_recall_above_chance_including_through_the_centre(blob_cohort, installed, tmp_path):
    config = tiny_config(steps=100, checkpoint_every=100)
    plan = plan_for(blob_cohort, installed, config, tmp_path)
    align(Run.for_plan(plan, installed, config, tmp_path))
    rows = {(r.source, r.target): r for r in evaluate_alignment(plan, installed, config, tmp_path)}
    assert len(rows) == 6 and all(r.subjects == 16 for r in rows.values())
    chance = {1: 1 / 16, 5: 5 / 16}
    # eight findings, two test subjects each, identical reports: the best possible R@1 is 0.5
    for pair in [("text", "xray"), ("xray", "text"), ("text", "ct"), ("ct", "text")]:
        assert rows[pair].trained_together, pair
        assert rows[pair].recall[1] >= 3 * chance[1] and rows[pair].recall[5] >= 2 * chance[5], (pair, rows[pair].recall)
    for pair in [("xray", "ct"), ("ct", "xray")]:  # never paired: aligned only through the text centre
        assert not rows[pair].trained_together and rows[pair].through == (pair[0], "text", pair[1])
        assert rows[pair].recall[1] >= 2 * chance[1] and rows[pair].recall[5] >= 1.6 * chance[5], (pair, rows[pair].recall)
    assert (tmp_path / "eval" / "retrieval.png").stat().st_size > 1000
    assert read_json(tmp_path / "eval" / "retrieval.json")[0]["chance"]["1"] == pytest.approx(chance[1])
