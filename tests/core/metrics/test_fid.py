"""FID: the closed form for Gaussians, an independent matrix square root, and the named feature networks."""

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from medm2g.core.errors import CheckpointError, ConfigError
from medm2g.core.metrics.fid import frechet_distance, timm_feature_network


def test_fid_of_two_diagonal_gaussians_matches_the_closed_form():
    generator = np.random.default_rng(0)
    mean_a, mean_b = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    a = mean_a + np.sqrt(var_a) * generator.standard_normal((40000, 3))
    b = mean_b + np.sqrt(var_b) * generator.standard_normal((40000, 3))
    expected = ((mean_a - mean_b) ** 2).sum() + (var_a + var_b - 2 * np.sqrt(var_a * var_b)).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)


def test_fid_agrees_with_scipy_s_matrix_square_root_on_correlated_features():
    generator = np.random.default_rng(1)
    a = generator.standard_normal((300, 6)) @ generator.standard_normal((6, 6))
    b = generator.standard_normal((300, 6)) @ generator.standard_normal((6, 6)) + 0.3
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    independent = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(independent, rel=1e-6)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), rows=st.integers(2, 40), width=st.integers(1, 12))
def test_fid_is_symmetric_non_negative_and_zero_on_itself(seed, rows, width):
    generator = np.random.default_rng(seed)
    a, b = generator.standard_normal((rows, width)), generator.standard_normal((rows + 3, width)) * 2
    scale = max(1.0, float(np.trace(np.atleast_2d(np.cov(a.T)))))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6 * scale)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6, abs=1e-6)
    assert frechet_distance(a, b) >= -1e-6


def test_mismatched_feature_sets_are_refused():
    with pytest.raises(ValueError, match=r"need two \(N>=2, D\) feature sets of one width"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


def test_a_named_timm_network_loads_local_weights_and_bad_names_are_clear(tmp_path):
    import timm

    weights = tmp_path / "resnet18-ct.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False, num_classes=0, in_chans=1).state_dict(), str(weights))
    network, label = timm_feature_network(f"timm:resnet18:{weights}", channels=1)
    assert label == "FID[timm resnet18, resnet18-ct.safetensors]"
    assert network(torch.zeros(2, 1, 64, 64)).shape == (2, 512)
    with pytest.raises(ConfigError, match="expected timm:ARCHITECTURE:/path/to/weights.safetensors"):
        timm_feature_network("resnet18", channels=1)
    with pytest.raises(ConfigError, match="weights must be a .safetensors file"):
        timm_feature_network(f"timm:resnet18:{tmp_path / 'w.pt'}", channels=1)
    with pytest.raises(CheckpointError, match="no such weights file"):
        timm_feature_network(f"timm:resnet18:{tmp_path / 'absent.safetensors'}", channels=1)
    with pytest.raises(CheckpointError, match="not weights of timm resnet34: missing"):
        timm_feature_network(f"timm:resnet34:{weights}", channels=1)
