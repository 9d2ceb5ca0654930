"""A stage whose loss or gradients stop being finite stops the run with one line naming the stage and
the step; its last checkpoint stays, no later stage runs or is marked done, and the run resumes."""

import logging
import math

import pytest
import torch
import yaml
from torch import nn

from medm2g.core.config.run_config import AccelerationConfig, structure_run_config, with_overrides
from medm2g.core.errors import DivergenceError
from medm2g.core.graph.engine import Stage, StageKind
from medm2g.core.graph.pair_graph import load_pair_graph
from medm2g.core.io.checkpoints import load_tensors
from medm2g.core.training import loop
from medm2g.core.training.engine import Engine
from medm2g.core.training.history import read_history
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import Run, plan_for
from medm2g.core.training.shards import Batching
from medm2g.core.training.trainer import train

STAGE = Stage(index=4, kind=StageKind.VAE, modalities=("ct",), datasets=("d.csv",), trains=(), frozen=())


class Planted(torch.autograd.Function):
    """Identity forward; an infinite gradient backward (a finite loss whose gradients overflow)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, math.inf)


def toy_steps(tmp_path, steps=6, checkpoint_every=2, nan_at=(), inf_gradient_at=()):
    """run_steps on a linear layer; the loss is NaN at the steps ``nan_at`` and the gradients infinite at
    ``inf_gradient_at`` (0-based). Returns (history, the layer)."""
    layer = nn.Linear(3, 1)
    torch.nn.init.constant_(layer.weight, 0.5)
    x, y = torch.linspace(-1, 1, 24).reshape(8, 3), torch.ones(8, 1)

    def step_loss(shard):
        out = layer(x)
        loss = (((Planted.apply(out) if shard.step in inf_gradient_at else out) - y) ** 2).mean()
        return (loss * math.nan if shard.step in nan_at else loss), {}

    optimizer = torch.optim.SGD(layer.parameters(), lr=0.05)
    engine = Engine(AccelerationConfig(), torch.device("cpu"))
    history, _ = loop.run_steps(STAGE, RunLayout(tmp_path), {"layer": layer}, optimizer, step_loss, steps,
                                checkpoint_every, seed=0, batching=Batching(8, 4, 0), engine=engine)
    return history, layer


def test_a_nan_loss_stops_the_stage_keeps_its_last_checkpoint_and_the_stage_resumes_from_it(tmp_path, caplog):
    layout = RunLayout(tmp_path)
    with pytest.raises(DivergenceError) as stopped:
        toy_steps(tmp_path, nan_at={3})
    message = str(stopped.value)
    assert message.startswith("stage 4 (vae ct) diverged: loss is nan at step 4 of 6; its last checkpoint (step 2) "
                              f"is kept in {layout.stage_state(STAGE)}") and "\n" not in message
    saved = load_tensors(layout.stage_state(STAGE))
    assert all(torch.isfinite(t).all() for t in saved.values())
    assert [row["step"] for row in read_history(layout.stage_history(STAGE))] == [0, 1, 2]  # the climb kept
    with caplog.at_level(logging.INFO, logger="medm2g.train"):
        history, layer = toy_steps(tmp_path)  # the config fixed: no NaN
    assert "vae ct: resuming at step 2 of 6" in caplog.text
    assert [row["step"] for row in history] == list(range(6)) and all(math.isfinite(r["loss"]) for r in history)
    assert torch.isfinite(layer.weight).all()


def test_infinite_gradients_under_a_finite_loss_are_never_applied(tmp_path):
    with pytest.raises(DivergenceError, match=r"gradients are not finite \(loss [0-9.e+-]+\) at step 1 of 6; it had "
                                              r"no checkpoint yet and will start again from its first step"):
        toy_steps(tmp_path, inf_gradient_at={0})
    assert not RunLayout(tmp_path).stage_state(STAGE).exists()


def test_a_configured_skip_budget_skips_that_many_steps_as_amp_does(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(loop, "nonfinite_skips", lambda engine: 2)
    with caplog.at_level(logging.WARNING, logger="medm2g.train"):
        history, layer = toy_steps(tmp_path, nan_at={1}, inf_gradient_at={4})
    assert [row["step"] for row in history] == [0, 2, 3, 5] and torch.isfinite(layer.weight).all()
    assert "vae ct: step 2 skipped: loss nan (1 of 2 skips allowed)" in caplog.text
    assert "step 5 skipped: non-finite gradients (2 of 2" in caplog.text
    with pytest.raises(DivergenceError, match="loss is nan at step 6 of 6"):
        toy_steps(tmp_path / "again", nan_at={1, 3, 5})


def test_a_learning_rate_far_too_high_stops_the_run_before_any_later_stage(blob_cohort, tiny_run_config, tmp_path,
                                                                          installed):
    """The issue's case: ``vae.learning_rate: 1e30`` made NaN weights, exports and records in every later stage."""
    plan = plan_for(load_pair_graph(blob_cohort / "blobs.yaml", installed=installed), installed)
    diverging = with_overrides(structure_run_config(yaml.safe_load(tiny_run_config)), **{"vae.learning_rate": 1e30})
    run, vae_stages = tmp_path / "run", plan.stages_of(StageKind.VAE)
    with pytest.raises(DivergenceError, match=rf"^stage {vae_stages[0].index} \(vae text\) diverged: loss is nan at "
                                              r"step 2 of 3; it had no checkpoint yet") as stopped:
        train(Run.for_plan(plan, installed, diverging, run), kinds={StageKind.VAE})
    assert "\n" not in str(stopped.value)
    assert not list(run.rglob("record.json")) and not list(run.rglob("*.safetensors"))  # nothing marked done
    # resuming with the config fixed: test_a_nan_loss_stops_the_stage_keeps_its_last_checkpoint_and_...
