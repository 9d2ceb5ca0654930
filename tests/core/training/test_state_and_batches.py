"""Resumable training state and deterministic batches."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from medm2g.core.errors import CheckpointError
from medm2g.core.training.batches import batch_indices
from medm2g.core.training.state import load_training_state, save_training_state


def make(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    return model, optimizer, scheduler


def train(model, optimizer, scheduler, steps: range):
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(16, 4, generator=generator)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def test_stopping_and_resuming_gives_the_uninterrupted_weights(tmp_path):
    reference = make()
    train(*reference, range(10))

    first = make()
    train(*first, range(4))
    generator = torch.Generator().manual_seed(5)
    generator.manual_seed(99)
    save_training_state(tmp_path / "s.safetensors", {"model": first[0]}, first[1], 4, {"aug": generator},
                        extra={"note": "x"}, scheduler=first[2])

    resumed = make(seed=123)  # different initial weights: everything must come from the file
    restored_generator = torch.Generator()
    step, extra = load_training_state(tmp_path / "s.safetensors", {"model": resumed[0]}, resumed[1],
                                      {"aug": restored_generator}, scheduler=resumed[2])
    assert (step, extra) == (4, {"note": "x"})
    assert torch.equal(restored_generator.get_state(), generator.get_state())
    train(*resumed, range(4, 10))
    for name, tensor in reference[0].state_dict().items():
        assert torch.equal(tensor, resumed[0].state_dict()[name]), name


def test_a_state_for_another_model_is_refused(tmp_path):
    model, optimizer, _ = make()
    save_training_state(tmp_path / "s.safetensors", {"model": model}, optimizer, 1)
    other = nn.Linear(4, 1)
    with pytest.raises(CheckpointError, match=r"module 'model' does not match the saved state"):
        load_training_state(tmp_path / "s.safetensors", {"model": other}, torch.optim.AdamW(other.parameters()))


@given(size=st.integers(2, 60), batch_size=st.integers(2, 16), seed=st.integers(0, 1000), epoch=st.integers(0, 5))
def test_each_epoch_visits_distinct_records_in_full_batches(size, batch_size, seed, epoch):
    per_epoch = size // min(batch_size, size)
    batches = [batch_indices(size, batch_size, seed, epoch * per_epoch + k) for k in range(per_epoch)]
    flat = [i for batch in batches for i in batch]
    assert all(len(batch) == min(batch_size, size) for batch in batches)
    assert len(set(flat)) == len(flat) and all(0 <= i < size for i in flat)
    assert batches == [batch_indices(size, batch_size, seed, epoch * per_epoch + k) for k in range(per_epoch)]


def test_epochs_are_shuffled_differently():
    assert batch_indices(40, 40, 0, 0) != batch_indices(40, 40, 0, 1)
    with pytest.raises(ValueError, match="a dataset of 1 record"):
        batch_indices(1, 4, 0, 0)


def test_memoised_records_stay_within_their_memory_budget():
    from medm2g.core.training.batches import MemoisedDataset

    reads = []

    class Records:
        def __len__(self):
            return 4

        def __getitem__(self, index):
            reads.append(index)
            return {"ct": torch.full((1, 8, 8), float(index)), "text": f"report {index}"}

    records = MemoisedDataset(Records(), max_bytes=2 * 8 * 8 * 4)  # room for two items' pixels
    for _ in range(2):
        assert [float(records[i]["ct"][0, 0, 0]) for i in range(4)] == [0.0, 1.0, 2.0, 3.0]
    assert reads == [0, 1, 2, 3, 2, 3]  # the first two kept, the others read again
