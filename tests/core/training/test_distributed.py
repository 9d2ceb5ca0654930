"""Training on accelerate: a step's batch shared out over processes and micro-batches trains the
weights one process with the whole batch trains; mixed precision keeps frozen models in bf16;
gradient checkpointing and the EMA change memory and the saved weights, not the maths."""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from medm2g.core.config.run_config import AccelerationConfig, load_run_config
from medm2g.core.errors import ConfigError
from medm2g.core.graph.engine import StageKind
from medm2g.core.io.checkpoints import load_tensors, read_json
from medm2g.core.training.cross_guided import build_round
from medm2g.core.training.ema import ParameterEMA, ema_decay_at
from medm2g.core.training.engine import Engine
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import Run, load_run_plan
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
    return engine, build_round(Run(config, registry, plan, layout, engine), plan.rounds[index])


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
        train(Run.for_plan(plan, registry, config, run), kinds={StageKind.LDM})
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
    results = train(Run.for_plan(plan, registry, config, run), kinds={StageKind.LDM, StageKind.CROSS_GUIDED})
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



EVERY_STAGE_GRAPH = """\
name: blobs-every-stage
center: text
modalities: [text, xray, ct]
evaluation: "{data}/test.csv"
pairs:
  - {{a: text, b: xray, dataset: "{data}/text-xray.csv"}}
  - {{a: text, b: ct, dataset: "{data}/text-ct.csv"}}
  - {{a: xray, b: ct, dataset: ["{data}/text-xray.csv", "{data}/text-ct.csv"], paired: false, backend: syndiff}}
"""
"""The suite's blob graph with a SynDiff edge beside it: every stage kind, in 11 stages."""
SMALL_SYNDIFF = "syndiff: {widths: [8, 8, 8], latent_dim: 8, training_steps: 3, batch_size: 4, checkpoint_every: 3}\n"
"""Three levels, so that the mid-block's attention runs at 16 x 16, not 64 x 64 (3 s a stage, not 20 s)."""
ENGINE_STAGES = ["01-alignment-text-xray", "02-alignment-text-ct", "03-vae-text", "04-vae-xray", "05-vae-ct",
                 "06-ldm-text", "07-ldm-xray", "08-ldm-ct", "09-cross_guided-text-xray", "10-cross_guided-text-ct"]
SYNDIFF_STAGE = "11-adversarial_diffusion-xray-ct"
PROCESS_WEIGHTS = Path(__file__).with_name("process_weights.py")
PROCESS_WEIGHTS_FOLDER = "MEDM2G_PROCESS_WEIGHTS"
"""The environment variable naming the folder process_weights.py writes into."""


@pytest.fixture(scope="module")
def every_stage_on_two_processes(blob_cohort, tiny_run_config, tmp_path_factory):
    """`medm2g train` of EVERY_STAGE_GRAPH launched as 2 CPU processes (gloo), each writing what its
    trained modules hold at the end of every stage trained on the engine (process_weights.py)."""
    folder = tmp_path_factory.mktemp("every-stage")
    graph, config = folder / "every-stage.yaml", folder / "tiny.yaml"
    graph.write_text(EVERY_STAGE_GRAPH.format(data=(blob_cohort / "data").as_posix()))
    config.write_text(tiny_run_config + SMALL_SYNDIFF)
    run, weights = folder / "run", folder / "process-weights"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--num_cpu_threads_per_process", "1", str(PROCESS_WEIGHTS),
               "train", str(graph), "--config", str(config), "--device", "cpu", "--out", str(run)]
    finished = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600,
                              env={**os.environ, PROCESS_WEIGHTS_FOLDER: str(weights)})
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.count("trained models in") == 1  # only the main process reports
    return SimpleNamespace(graph=graph, run=run, weights=weights)


def _saved_file(layout: RunLayout, stage: str, module: str) -> Path | None:
    """Where the main process saved ``module`` (a key of the stage's trained modules) of ``stage``."""
    _, kind, *modalities = stage.split("-")
    if kind == "alignment":
        return None if module == "temperature" else layout.encoder(module)  # the temperature: in the record
    if kind == "vae":
        return layout.vae(modalities[0])
    if kind == "ldm":
        return layout.denoiser(modalities[0])
    return layout.cross_guided(module)  # a round: one module per side it trains


def _saved_as(saved: dict[str, torch.Tensor], name: str, tensor: torch.Tensor) -> bool:
    """Whether ``saved`` holds ``tensor`` under ``name``; a round's file names theta_c's sub-layers
    by their place in the denoiser (``cross_guidance.<path>.to_k.weight``), where the side holds them
    in a list (``cross_guidance.<i>.to_k.weight``): those are looked up by value. Each saved
    tensor is taken once."""
    if name in saved:
        return torch.equal(saved.pop(name), tensor)
    part, _, rest = name.partition(".")
    suffix = "." + rest.partition(".")[2]
    for key in [key for key in saved if key.startswith(part + ".") and key.endswith(suffix)]:
        if saved[key].shape == tensor.shape and torch.equal(saved[key], tensor):
            del saved[key]
            return True
    return False


@pytest.mark.slow
def test_two_gloo_processes_end_every_stage_kind_with_the_same_weights(every_stage_on_two_processes):
    """Alignment (InfoNCE gathered over the processes, BERT's unused pooler: DDP's
    find_unused_parameters), the VAEs, the LDMs and the rounds under 2 processes: at the end of
    each of the 10 stages trained on the engine, both processes hold every trained parameter bit
    for bit alike, and what the other process holds is what the main process saved (encoders,
    VAEs, denoisers, cross-guided parts). A whole run on 2 processes is not compared with one on
    1 process here: dropout masks (BERT), BatchNorm's batch statistics and the VAEs' batch-wise
    posterior draws are per process by design, and every later stage builds on them (the LDM
    stages and rounds, from the same encoders and VAEs, are compared in the test above)."""
    launched = every_stage_on_two_processes
    layout = RunLayout(launched.run)
    kinds = {read_json(path)["stage"]["kind"] for path in (launched.run / "stages").glob("*/record.json")}
    assert kinds == {kind.value for kind in StageKind}  # every stage kind ran, SynDiff included
    main_process, other_process = (launched.weights / f"process-{index}" for index in (0, 1))
    for process in (main_process, other_process):
        assert sorted(path.stem for path in process.iterdir()) == ENGINE_STAGES
    saved, checked = {}, set()
    for stage in ENGINE_STAGES:
        ours, theirs = (load_file(process / f"{stage}.safetensors") for process in (main_process, other_process))
        parameters = sorted(key for key in ours if key.startswith("parameter/"))
        assert parameters and parameters == sorted(key for key in theirs if key.startswith("parameter/")), stage
        differing = [key for key in parameters if not torch.equal(ours[key], theirs[key])]
        assert not differing, (stage, len(differing), differing[:4])
        for key in parameters:
            module, name = key.removeprefix("parameter/").split(".", 1)
            path = _saved_file(layout, stage, module)
            if path is not None:
                if path not in saved:
                    saved[path] = load_tensors(path)
                assert _saved_as(saved[path], name, theirs[key]), (stage, key, path)
                checked.add(path)
    written = {path for pattern in ("encoders/*", "models/*/vae", "models/*/denoiser", "models/*/cross_guided")
               for path in launched.run.glob(f"{pattern}.safetensors")}
    assert checked == written and len(written) == 12  # 3 encoders, 3 VAEs, 3 denoisers, 3 cross-guided parts


@pytest.mark.slow
def test_two_gloo_processes_end_every_stage_with_the_same_buffers(every_stage_on_two_processes):
    """As the weights, the buffers of every stage's trained modules (BatchNorm's running statistics)."""
    main_process, other_process = (every_stage_on_two_processes.weights / f"process-{index}" for index in (0, 1))
    for stage in ENGINE_STAGES:
        ours, theirs = (load_file(process / f"{stage}.safetensors") for process in (main_process, other_process))
        buffers = sorted(key for key in ours if key.startswith("buffer/"))
        assert buffers == sorted(key for key in theirs if key.startswith("buffer/")), stage
        differing = [key for key in buffers if not torch.equal(ours[key], theirs[key])]
        assert not differing, (stage, len(differing), differing[:4])


@pytest.mark.slow
def test_syndiff_trains_on_the_main_process_alone_to_the_weights_of_one_process(every_stage_on_two_processes,
                                                                                installed, tmp_path):
    """SynDiff's alternating critic and generator half-steps keep their own loop, off the engine: under
    2 processes the main process trains the stage and the other waits (`run_syndiff_stage`), so no
    other process ever holds SynDiff weights. What the main process saved equals a one-process run of
    the same stage on one thread, as each launched process has (measured: bit for bit, where 3 steps
    move the weights by up to 5e-4)."""
    from medm2g.core.backends.syndiff.stage import build_syndiff
    from medm2g.core.graph.pair_graph import load_pair_graph
    from medm2g.core.training.run import prepare_run
    from medm2g.core.training.trainer import train

    launched = every_stage_on_two_processes
    record = read_json(launched.run / "stages" / SYNDIFF_STAGE / "record.json")
    assert (record["stage"]["kind"], record["stage"]["backend"], record["steps"]) == ("adversarial_diffusion",
                                                                                      "syndiff", 3)
    assert not list(launched.weights.glob(f"*/{SYNDIFF_STAGE}.safetensors"))  # neither process trained it on the engine
    config = load_run_config(RunLayout(launched.run).config)
    registry = config.modalities(installed)
    single = tmp_path / "single"
    plan = prepare_run(load_pair_graph(launched.graph, installed=registry), registry, config, single)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (result,) = train(Run.for_plan(plan, registry, config, single), kinds={StageKind.ADVERSARIAL_DIFFUSION})
    finally:
        torch.set_num_threads(threads)
    assert RunLayout(single).stage_dir(result.stage).name == SYNDIFF_STAGE
    one, two = (load_tensors(RunLayout(run).translation("xray", "ct")) for run in (single, launched.run))
    assert one.keys() == two.keys()
    untrained = build_syndiff(registry, "xray", "ct", config).state_dict()
    moved = max(float((one[key] - untrained[key]).abs().max()) for key in one if one[key].is_floating_point())
    assert moved > 1e-4, moved  # trained: the comparison is not of two untouched initialisations
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-6, msg=key)
