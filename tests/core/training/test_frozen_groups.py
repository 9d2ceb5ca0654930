"""Frozen means free: a round's optimizer holds exactly the groups its plan trains, and after a
step nothing else has a gradient or optimizer state."""

import torch

from medm2g.core.config.run_config import load_run_config
from medm2g.core.training.cross_guided import build_round
from medm2g.core.training.engine import Engine
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import Run, load_run_plan


def test_a_round_with_a_frozen_side_steps_only_its_trained_groups(tiny_trained_run, installed):
    layout = RunLayout(tiny_trained_run)
    config = load_run_config(layout.config)
    registry = config.modalities(installed)
    plan = load_run_plan(layout, registry)
    stage = plan.rounds[1]  # text-ct: text's cross-guided parts trained in round 1, frozen here
    assert [g.modality for g in stage.trains] == ["ct"] * 3
    engine = Engine(config.acceleration, torch.device("cpu"))
    round_ = build_round(Run(config, registry, plan, layout, engine), stage)
    model, optimizer = engine.prepare(round_.stateful(), round_.step_loss, round_.optimizer)
    parameters = [p for group in round_.optimizer.param_groups for p in group["params"]]
    engine.step(model, optimizer, parameters, engine.shards(round_.batching, step=0, step_seed=0), max_grad_norm=1.0)

    trained = {id(p) for group in stage.trains for p in round_.sides[group.modality].groups()[group.part]}
    in_optimizer = {id(p) for group in round_.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == trained
    assert {id(p) for p in round_.optimizer.state} == trained  # Adam moments for the trained groups only
    moments = sum(state["exp_avg"].numel() + state["exp_avg_sq"].numel() for state in round_.optimizer.state.values())
    everything = [p for side in round_.sides.values() for p in side.parameters()]
    assert moments == 2 * sum(p.numel() for p in everything if id(p) in trained)
    frozen = [p for p in everything if id(p) not in trained]
    assert len(frozen) > len(trained)  # both denoisers and text's V, f, theta_c
    assert all(p.grad is None and not p.requires_grad for p in frozen)
    assert all(p.grad is not None for p in everything if id(p) in trained and p.requires_grad)
