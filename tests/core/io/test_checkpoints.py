"""Safetensors checkpoints: round trips, atomic replacement, and errors that say what is wrong."""

import json

import pytest
import torch
from torch import nn

from medm2g.core.errors import CheckpointError
from medm2g.core.io.checkpoints import (
    load_module,
    load_tensors,
    read_json,
    read_metadata,
    save_module,
    save_tensors,
    write_json,
)


def test_a_module_round_trips_with_its_buffers_and_metadata(tmp_path):
    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    source[1].running_mean.fill_(0.25)
    save_module(tmp_path / "m.safetensors", source, {"stage": "alignment text-xray"})
    target = load_module(tmp_path / "m.safetensors", nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    for name, tensor in source.state_dict().items():
        assert torch.equal(tensor, target.state_dict()[name])
    assert read_metadata(tmp_path / "m.safetensors") == {"stage": "alignment text-xray"}


def test_tied_weights_are_saved(tmp_path):
    module = nn.Module()
    module.a = nn.Linear(2, 2)
    module.b = nn.Linear(2, 2)
    module.b.weight = module.a.weight
    save_module(tmp_path / "tied.safetensors", module)
    assert set(load_tensors(tmp_path / "tied.safetensors")) == {"a.weight", "a.bias", "b.weight", "b.bias"}


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_partial_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"x": torch.ones(2)})
    with pytest.raises(Exception):
        save_tensors(path, {"x": "not a tensor"})
    assert torch.equal(load_tensors(path)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_a_checkpoint_of_another_model_is_refused_with_the_tensor_named(tmp_path):
    save_module(tmp_path / "small.safetensors", nn.Linear(3, 4))
    with pytest.raises(CheckpointError, match=r"small.safetensors: tensor 'bias' has shape \(4,\), the model expects \(5,\)"):
        load_module(tmp_path / "small.safetensors", nn.Linear(3, 5))
    with pytest.raises(CheckpointError, match=r"missing '0.weight'.*another model size"):
        load_module(tmp_path / "small.safetensors", nn.Sequential(nn.Linear(3, 4)))


def test_a_corrupt_or_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(CheckpointError, match="bad.safetensors: not a readable safetensors file"):
        load_tensors(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="absent.safetensors: checkpoint not found"):
        load_tensors(tmp_path / "absent.safetensors")


def test_json_records_round_trip_and_report_corruption(tmp_path):
    write_json(tmp_path / "r.json", {"step": 3, "path": tmp_path})
    assert read_json(tmp_path / "r.json") == {"step": 3, "path": str(tmp_path)}
    (tmp_path / "broken.json").write_text('{"step": ')
    with pytest.raises(CheckpointError, match=r"broken.json: not valid JSON \(line 1\)"):
        read_json(tmp_path / "broken.json")
    assert json.loads((tmp_path / "r.json").read_text())["step"] == 3
