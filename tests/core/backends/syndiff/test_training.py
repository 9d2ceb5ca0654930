"""The SynDiff loop: both halves step, the log is kept, and a stopped run resumes to the same weights."""

import torch

from medm2g.core.backends.syndiff.model import SynDiff
from medm2g.core.backends.syndiff.training import train_syndiff
from medm2g.core.backends.syndiff.unpaired import UnpairedBatches
from medm2g.core.config.syndiff import SynDiffConfig
from medm2g.core.training.history import read_history


def _data():
    generator = torch.Generator().manual_seed(0)
    subjects = [f"S{i}" for i in range(6)]
    mri = [{"subject_id": s, "mri": torch.rand(1, 16, 16, generator=generator) * 2 - 1} for s in subjects]
    ct = [{"subject_id": s, "ct": torch.rand(1, 16, 16, generator=generator) * 2 - 1} for s in subjects]
    return UnpairedBatches(mri, ct, "mri", "ct", seed=1)


def _model(steps: int) -> SynDiff:
    torch.manual_seed(0)
    config = SynDiffConfig(latent_dim=8, widths=(8, 16), training_steps=steps, batch_size=2, lazy_regularisation=2)
    return SynDiff("mri", "ct", {"mri": 1, "ct": 1}, 16, config)


def test_training_steps_both_halves_and_resumes_to_the_same_weights(tmp_path):
    straight = _model(4)
    before_critic = next(straight.step_critics.parameters()).clone()
    before_generator = next(straight.diffusive.parameters()).clone()
    history, _ = train_syndiff(straight, _data(), tmp_path / "a.safetensors", tmp_path / "a.jsonl",
                               torch.device("cpu"), seed=3, checkpoint_every=2)
    assert [row["step"] for row in history] == [0, 1, 2, 3]
    assert "r1" in history[0] and "r1" not in history[1]  # lazy: every second step here
    assert not torch.equal(next(straight.step_critics.parameters()), before_critic)
    assert not torch.equal(next(straight.diffusive.parameters()), before_generator)



class Stop(Exception):
    pass


def test_a_stopped_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    straight = _model(4)
    train_syndiff(straight, _data(), tmp_path / "a.safetensors", tmp_path / "a.jsonl", torch.device("cpu"),
                  seed=3, checkpoint_every=2)
    data = _data()

    def stopping(step, size):
        if step == 3:
            raise Stop  # killed during step 3, after the checkpoint at step 2
        return data(step, size)

    state, log = tmp_path / "b.safetensors", tmp_path / "b.jsonl"
    try:
        train_syndiff(_model(4), stopping, state, log, torch.device("cpu"), seed=3, checkpoint_every=2)
    except Stop:
        pass
    assert state.is_file() and [row["step"] for row in read_history(log)] == [0, 1]
    resumed = _model(4)
    train_syndiff(resumed, _data(), state, log, torch.device("cpu"), seed=3, checkpoint_every=2)
    assert [row["step"] for row in read_history(log)] == [0, 1, 2, 3]
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, msg=name)


def _poisoned(at: set[int]):
    data = _data()

    def batches(step, size):
        batch = data(step, size)
        if step in at:  # a non-finite input: every loss of this step is NaN
            batch = {k: v * float("nan") if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return batch
    return batches


def test_a_non_finite_step_stops_the_loop_naming_it_and_keeps_the_last_checkpoint(tmp_path):
    import pytest

    from medm2g.core.errors import DivergenceError

    model, state, log = _model(6), tmp_path / "a.safetensors", tmp_path / "a.jsonl"
    with pytest.raises(DivergenceError, match=r"syndiff mri-ct diverged: the critic loss is nan at step 4 of 6; "
                                              r"its last checkpoint \(step 2\) is kept"):
        train_syndiff(model, _poisoned({3}), state, log, torch.device("cpu"), seed=3, checkpoint_every=2)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the poisoned step was not applied
    assert [row["step"] for row in read_history(log)] == [0, 1, 2]
    resumed = _model(6)  # the input fixed, the same call resumes from step 2
    history, _ = train_syndiff(resumed, _data(), state, log, torch.device("cpu"), seed=3, checkpoint_every=2)
    assert [row["step"] for row in history] == [0, 1, 2, 3, 4, 5]


def test_skipped_non_finite_steps_are_left_out_up_to_the_allowance(tmp_path):
    model = _model(4)
    history, _ = train_syndiff(model, _poisoned({1}), tmp_path / "a.safetensors", tmp_path / "a.jsonl",
                               torch.device("cpu"), seed=3, checkpoint_every=2, skip_nonfinite=1)
    assert [row["step"] for row in history] == [0, 2, 3]
    assert all(torch.isfinite(p).all() for p in model.parameters())
