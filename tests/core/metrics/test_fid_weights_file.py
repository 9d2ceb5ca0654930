"""--fid-features weights that are not safetensors, or not this architecture's, are a one-line
CheckpointError, never a SafetensorError or RuntimeError traceback (#19, item 5)."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from medm2g.core.errors import CheckpointError
from medm2g.core.metrics.fid import timm_feature_network


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, pickle.dumps({"conv1.weight": [0.0]}), b"PK\x03\x04" + b"a" * 99],
                         ids=["empty", "zeros", "pickle", "zip"])
def test_a_file_that_is_not_safetensors_is_a_checkpoint_error(tmp_path, content):
    weights = tmp_path / "features.safetensors"
    weights.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"features.safetensors: not a safetensors file \(") as raised:
        timm_feature_network(f"timm:resnet18:{weights}", channels=1)
    assert "\n" not in str(raised.value)


def test_weights_of_the_wrong_shapes_are_a_checkpoint_error(tmp_path):
    weights = tmp_path / "other.safetensors"
    save_file({"conv1.weight": torch.zeros(8, 1, 3, 3)}, str(weights))  # resnet18's conv1 is 64x1x7x7
    with pytest.raises(CheckpointError, match="not weights of timm resnet18: .*size mismatch") as raised:
        timm_feature_network(f"timm:resnet18:{weights}", channels=1)
    assert "\n" not in str(raised.value)
