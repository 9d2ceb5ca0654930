"""Training on accelerate: a step's batch shared out over processes and micro-batches trains the
weights one process with the whole batch trains; mixed precision keeps frozen models in bf16;
gradient checkpointing and the EMA change memory and the saved weights, not the maths."""

import shutil
import subprocess
import sys

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medm2g.core.config.run_config import AccelerationConfig, load_run_config
from medm2g.core.errors import ConfigError
from medm2g.core.io.checkpoints import load_tensors
from medm2g.core.training.cross_guided import build_round
from medm2g.core.training.ema import ParameterEMA, ema_decay_at
from medm2g.core.training.engine import Engine
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import load_run_plan
from medm2g.core.training.shards import Batching, shards, step_batch_size
from medm2g.registry import ModelSize

CPU = torch.device("cpu")


@settings(max_examples=40, deadline=None)
@given(per_part=st.integers(2, 4), processes=st.integers(1, 3), micro_batches=st.integers(1, 3),
       step=st.integers(0, 50), step_seed=st.integers(0, 2**31))
def test_a_steps_draws_do_not_depend_on_how_its_batch_is_shared_out(per_part, processes, micro_batches, step,
                                                                     step_seed):
    size = per_part * processes * micro_batches
    batching = Batching(40, size, seed=3)
    (whole,) = shards(batching, step, step_seed, process=0, processes=1, micro_batches=1)
    parts = [part for process in range(processes)
             for part in shards(batching, step, step_seed, process, processes, micro_batches)]
    assert [i for part in parts for i in part.indices] == list(whole.indices) == batching.indices(step)
    assert [p for part in parts for p in part.positions] == list(range(size))
    # each sample draws the same numbers, in the same order, wherever it lands
    expected = (whole.random.randn(2, 3), whole.random.randint(1000), whole.random.rand())
    got = [(part.random.randn(2, 3), part.random.randint(1000), part.random.rand()) for part in parts]
    for index, tensor in enumerate(expected):
        torch.testing.assert_close(torch.cat([draws[index] for draws in got]), tensor, rtol=0, atol=0)


def test_a_batch_that_cannot_be_shared_out_is_refused_with_the_setting_named():
    assert step_batch_size(16, 100, 4, "ldm.batch_size") == 16
    assert step_batch_size(16, 14, 4, "ldm.batch_size") == 12  # a small dataset: a multiple of the parts
    with pytest.raises(ConfigError, match=r"ldm.batch_size: a batch of 6 cannot be shared out as 4 parts"):
        step_batch_size(6, 100, 4, "ldm.batch_size")


def test_fp16_on_the_cpu_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match="acceleration.mixed_precision: fp16 needs CUDA"):
        Engine(AccelerationConfig(mixed_precision="fp16"), CPU)


def test_the_ema_follows_the_warmed_up_decay():
    parameter = torch.nn.Parameter(torch.zeros(3))
    ema = ParameterEMA([parameter], decay=0.9)
    expected = torch.zeros(3)
    for k, value in enumerate([1.0, 2.0, 4.0, 8.0]):
        parameter.data.fill_(value)
        ema.update()
        decay = min(0.9, (1 + k) / (10 + k))
        assert decay == ema_decay_at(0.9, k)
        expected = decay * expected + (1 - decay) * value
    torch.testing.assert_close(ema.shadows()[0], expected)
    ema.copy_to_parameters()
    torch.testing.assert_close(parameter.data, expected)
    assert set(ema.state_dict()) == {"shadow_0", "updates"} and int(ema.updates) == 4


@pytest.mark.parametrize("modality, latents, enabled", [
    ("ct", (2, 4, 16, 16), "UNet2DConditionModel"),  # diffusers' own checkpointing
    ("text", (2, 768, 1, 1), "TextDiffuser"),  # medm2g's fully connected text diffuser
])
def test_gradient_checkpointing_changes_memory_not_the_gradients(installed, modality, latents, enabled):
    engine = Engine(AccelerationConfig(gradient_checkpointing=True), CPU)
    results = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        denoiser = installed[modality].unet(ModelSize.TINY, 16).train()
        with torch.no_grad():  # zero-initialised output layers would leave every gradient upstream zero
            for parameter in denoiser.parameters():
                if not parameter.any():
                    parameter.normal_(0, 0.02)
        if checkpointed:
            assert enabled in engine.checkpoint_gradients(denoiser)
        inputs, context = torch.randn(*latents), torch.randn(2, 1, 16)
        loss = denoiser(inputs, torch.tensor([10, 500]), context).square().mean()
        loss.backward()
        results.append((float(loss.detach()), [p.grad.clone() for p in denoiser.parameters()]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    assert sum(int(g.abs().sum() > 0) for g in results[0][1]) > len(results[0][1]) // 2  # gradients flowed
    for plain, recomputed in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(recomputed, plain, rtol=1e-5, atol=1e-6)


def _round(tiny_trained_run, installed, acceleration: AccelerationConfig, index: int = 0):
    layout = RunLayout(tiny_trained_run)
    config = attrs.evolve(load_run_config(layout.config), acceleration=acceleration, latent_cache=False)
    registry = config.modalities(installed)
    plan = load_run_plan(layout, registry)
    engine = Engine(config.acceleration, CPU)
    return engine, build_round(plan, plan.rounds[index], registry, config, layout, engine)


def test_bf16_keeps_frozen_models_in_bf16_and_trains_in_float32(tiny_trained_run, installed):
    engine, round_ = _round(tiny_trained_run, installed, AccelerationConfig(mixed_precision="bf16"))
    trained = [p for group in round_.optimizer.param_groups for p in group["params"]]
    frozen = [p for m in round_.vaes.values() for p in m.parameters()]
    frozen += [p for side in round_.sides.values() for p in side.parameters() if not p.requires_grad]
    assert {p.dtype for p in frozen} == {torch.bfloat16}
    assert {p.dtype for p in trained} == {torch.float32}
    model, optimizer = engine.prepare(round_.stateful(), round_.step_loss, round_.optimizer)
    before = [p.detach().clone() for p in trained]
    loss, _ = engine.step(model, optimizer, trained, engine.shards(round_.batching, 0, 7), max_grad_norm=1.0)
    assert torch.isfinite(torch.tensor(loss))
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trained)
    assert any(not torch.equal(b, p) for b, p in zip(before, trained))


def test_micro_batches_train_the_weights_of_the_whole_batch(tiny_trained_run, installed):
    """Gradient accumulation over 2 (or 4) micro-batches: 3 Adam steps land on the weights of 3
    steps on the whole batch of 8, to float rounding (atol 1e-6; the steps move them by 3e-4)."""
    weights = []
    for micro_batches in (1, 2, 4):
        engine, round_ = _round(tiny_trained_run, installed,
                                AccelerationConfig(gradient_accumulation_steps=micro_batches))
        trained = [p for group in round_.optimizer.param_groups for p in group["params"]]
        initial = [p.detach().clone() for p in trained]
        model, optimizer = engine.prepare(round_.stateful(), round_.step_loss, round_.optimizer)
        for step in range(3):
            engine.step(model, optimizer, trained, engine.shards(round_.batching, step, 100 + step), 1.0)
        weights.append([p.detach().clone() for p in trained])
    moved = max(float((w - i).abs().max()) for w, i in zip(weights[0], initial))
    assert moved > 1e-4  # the warm-up's small steps moved the weights: they are not compared untouched
    for accumulated in weights[1:]:
        for whole, parts in zip(weights[0], accumulated):
            torch.testing.assert_close(parts, whole, rtol=0, atol=1e-6)


DIFFUSION_STAGES = ("-ldm-", "-cross_guided-")


def _without_diffusion_stages(source, target):
    """A copy of a trained run with its LDM and round stages undone: alignment and VAEs kept."""
    shutil.copytree(source, target)
    for stage in (target / "stages").iterdir():
        if any(kind in stage.name for kind in DIFFUSION_STAGES):
            shutil.rmtree(stage)
    for pattern in ("models/*/denoiser.safetensors", "models/*/cross_guided.safetensors"):
        for path in target.glob(pattern):
            path.unlink()
    for folder in target.glob("models/*/unet"):
        shutil.rmtree(folder)
    return target


def _stopped_inside_the_first_ldm_stage(run, installed, stop_training):
    """Train the run's LDM stages in this process with a checkpoint every 2 steps, and stop at the
    first stage's third step: the run is left with that stage's state at step 2."""
    from medm2g.core.graph.engine import StageKind
    from medm2g.core.training.trainer import train

    layout = RunLayout(run)
    config = load_run_config(layout.config)
    config = attrs.evolve(config, ldm=attrs.evolve(config.ldm, checkpoint_every=2))
    registry = config.modalities(installed)
    plan = load_run_plan(layout, registry)
    stop_training("ldm text", 2)
    with pytest.raises(KeyboardInterrupt):
        train(plan, registry, config, run, kinds={StageKind.LDM})
    stop_training(None)
    (state,) = run.glob("stages/*-ldm-*/state.safetensors")
    return state


def test_two_gloo_processes_train_the_weights_of_one_process_with_their_whole_batch(
        blob_cohort, tiny_trained_run, installed, tmp_path, stop_training):
    """`accelerate launch` with 2 CPU processes (gloo), each with half of every step's batch of 8,
    resuming a run stopped inside its first LDM stage, against one process with the whole batch,
    uninterrupted: every LDM and round weight equal to atol 5e-6 after 3 steps per stage
    (measured: at most 1.0e-6, while the warm-up's steps move weights by about 1e-4). The
    all-reduced gradients differ from the one-process sum by float rounding only."""
    from medm2g.core.apps.cli import main

    config = tiny_trained_run.parent / "tiny.yaml"
    arguments = ["train", str(blob_cohort / "blobs.yaml"), "--config", str(config), "--device", "cpu"]
    single = _without_diffusion_stages(tiny_trained_run, tmp_path / "single")
    assert main([*arguments, "--out", str(single)]) == 0
    launched = _without_diffusion_stages(tiny_trained_run, tmp_path / "launched")
    state = _stopped_inside_the_first_ldm_stage(launched, installed, stop_training)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--num_cpu_threads_per_process", "1", "-m", "medm2g.core.apps.cli", *arguments, "--out", str(launched)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.count("trained models in") == 1  # only the main process reports
    assert "ldm text: resuming at step 2 of 3" in finished.stderr  # logged once, by the main process
    assert finished.stderr.count("resuming at step") == 1
    assert not state.exists()

    compared = sorted(p.relative_to(single) for pattern in ("models/*/denoiser.safetensors",
                                                            "models/*/cross_guided.safetensors")
                      for p in single.glob(pattern))
    assert len(compared) == 6  # 3 denoisers; the cross-guided parts of text, xray (round 1) and ct (round 2)
    for relative in compared:
        one, two = load_tensors(single / relative), load_tensors(launched / relative)
        assert one.keys() == two.keys(), relative
        worst = max(float((one[k] - two[k]).abs().max()) for k in one)
        assert worst <= 5e-6, (relative, worst)
    history = [line for line in (state.parent / "history.jsonl").read_text().splitlines() if line]
    assert len(history) == 3  # two steps before the stop, one after: the log continues, not restarts


def test_diffusion_stages_train_in_bf16_with_micro_batches_checkpointing_and_ema(tiny_trained_run, installed,
                                                                                 tmp_path):
    """The LDM stages and the rounds end to end with every acceleration setting on: each stage
    completes with a finite loss, and what it saves is float32 and finite (frozen layers ran in bf16)."""
    from medm2g.core.graph.engine import StageKind
    from medm2g.core.training.trainer import train

    run = _without_diffusion_stages(tiny_trained_run, tmp_path / "accelerated")
    layout = RunLayout(run)
    config = attrs.evolve(load_run_config(layout.config), acceleration=AccelerationConfig(
        mixed_precision="bf16", gradient_accumulation_steps=2, gradient_checkpointing=True, ema_decay=0.99))
    registry = config.modalities(installed)
    plan = load_run_plan(layout, registry)
    results = train(plan, registry, config, run, kinds={StageKind.LDM, StageKind.CROSS_GUIDED})
    assert [r.stage.title for r in results] == ["ldm text", "ldm xray", "ldm ct",
                                                "cross_guided text-xray", "cross_guided text-ct"]
    assert all(r.record["final"]["loss"] == r.record["final"]["loss"] for r in results)  # not NaN
    for path in [*run.glob("models/*/denoiser.safetensors"), *run.glob("models/*/cross_guided.safetensors")]:
        tensors = load_tensors(path)
        assert {t.dtype for t in tensors.values()} == {torch.float32}, path
        assert all(torch.isfinite(t).all() for t in tensors.values()), path
    assert not list(run.glob("stages/*/state.safetensors"))


def test_a_stage_with_ema_leaves_the_average_of_its_steps_in_the_trained_weights(tmp_path):
    """run_steps on a one-parameter model: the weights it leaves are the warmed-up EMA of the
    weights after each step, computed here by hand from the same trajectory."""
    from medm2g.core.graph.engine import Stage, StageKind
    from medm2g.core.training.loop import run_steps

    stage = Stage(index=1, kind=StageKind.LDM, modalities=("x",), datasets=(), trains=(), frozen=())
    weights = []

    def run(ema_decay: float) -> torch.Tensor:
        model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.constant_(model.weight, 1.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

        def step_loss(shard):
            weights.append(float(model.weight.detach()))  # the weight this step starts from
            return model.weight.square().sum(), {}

        engine = Engine(AccelerationConfig(ema_decay=ema_decay), CPU)
        run_steps(stage, RunLayout(tmp_path / str(ema_decay)), {"model": model}, optimizer, step_loss, steps=5,
                  checkpoint_every=5, seed=0, batching=Batching(8, 2, seed=0), engine=engine)
        return model.weight.detach().clone()

    plain = run(0.0)
    trajectory = weights[1:] + [float(plain)]  # the weights after each of the 5 steps
    weights.clear()
    averaged = float(run(0.9))
    expected = 1.0
    for k, value in enumerate(trajectory):
        decay = ema_decay_at(0.9, k)
        expected = decay * expected + (1 - decay) * value
    assert averaged == pytest.approx(expected, rel=1e-6)
    assert abs(averaged - float(plain)) > 0.01  # the EMA lags the last step's weight

