"""Loss invariants of eq. 3 (InfoNCE) and eq. 4 (visual invariant), stated with hypothesis."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from medm2g.core.models.losses import (
    LearnableTemperature,
    cross_correlation,
    symmetric_info_nce,
    visual_invariant_loss,
)


@st.composite
def embedding_pairs(draw, min_batch=2, max_batch=12):
    batch = draw(st.integers(min_batch, max_batch))
    dim = draw(st.integers(2, 16))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    b = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    return a, b, generator


def reference_info_nce(a, b, temperature):
    """Written independently: softmax over each row and each column, minus log of the diagonal."""
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    similarity = (a @ b.T) / temperature
    row = -(similarity.diag() - torch.logsumexp(similarity, dim=1)).mean()
    column = -(similarity.diag() - torch.logsumexp(similarity, dim=0)).mean()
    return (row + column) / 2


@settings(max_examples=60, deadline=None)
@given(embedding_pairs(), st.floats(0.05, 1.0))
def test_info_nce_equals_cross_entropy_written_independently(pair, temperature):
    a, b, _ = pair
    assert symmetric_info_nce(a, b, temperature).item() == pytest.approx(
        reference_info_nce(a, b, temperature).item(), rel=1e-4, abs=1e-5)


@settings(max_examples=60, deadline=None)
@given(embedding_pairs(), st.randoms(use_true_random=False))
def test_info_nce_is_invariant_to_a_consistent_permutation_and_symmetric(pair, random):
    a, b, _ = pair
    order = list(range(a.shape[0]))
    random.shuffle(order)
    loss = symmetric_info_nce(a, b)
    assert symmetric_info_nce(a[order], b[order]).item() == pytest.approx(loss.item(), rel=1e-5)
    assert symmetric_info_nce(b, a).item() == pytest.approx(loss.item(), rel=1e-5)
    assert loss.item() >= 0


@settings(max_examples=60, deadline=None)
@given(embedding_pairs(min_batch=3), st.randoms(use_true_random=False))
def test_info_nce_is_lowest_for_matching_pairs_and_rises_when_shuffled(pair, random):
    a, _, generator = pair
    # well-separated directions (orthonormal rows): with nearly collinear rows a swap
    # costs less than the noise, and the property is not true
    n = a.shape[0]
    a = torch.linalg.qr(torch.randn(max(n, a.shape[1]), n, generator=generator, dtype=a.dtype)).Q.T
    matched = a + 0.05 * torch.randn(a.shape, generator=generator, dtype=a.dtype)
    order = list(range(a.shape[0]))
    random.shuffle(order)
    assume(order != sorted(order))
    assert symmetric_info_nce(a, matched, 0.1) < symmetric_info_nce(a, matched[order], 0.1)


def test_info_nce_refuses_a_batch_of_one_and_mismatched_shapes():
    with pytest.raises(ValueError, match="undefined for batch size 1"):
        symmetric_info_nce(torch.randn(1, 8), torch.randn(1, 8))
    with pytest.raises(ValueError, match="one shape"):
        symmetric_info_nce(torch.randn(4, 8), torch.randn(4, 7))


def test_the_learnable_temperature_is_clamped_and_trainable():
    temperature = LearnableTemperature(0.07, minimum=0.01, maximum=1.0)
    assert temperature().item() == pytest.approx(0.07)
    with torch.no_grad():
        temperature.log_scale.fill_(20.0)
    assert temperature().item() == pytest.approx(0.01)
    with torch.no_grad():
        temperature.log_scale.fill_(-math.log(0.5))
    symmetric_info_nce(torch.randn(4, 8), torch.randn(4, 8), temperature()).backward()
    assert temperature.log_scale.grad is not None and temperature.log_scale.grad.abs() > 0


@pytest.mark.parametrize("batch", [2, 8, 64])
def test_both_losses_are_stable_in_bfloat16(batch):
    generator = torch.Generator().manual_seed(batch)
    a, b = torch.randn(batch, 32, generator=generator), torch.randn(batch, 32, generator=generator)
    for loss in (symmetric_info_nce, visual_invariant_loss):
        full, half = loss(a, b), loss(a.bfloat16(), b.bfloat16())
        assert torch.isfinite(half) and half.dtype == torch.float32
        assert half.item() == pytest.approx(full.item(), rel=0.05, abs=0.02)


def decorrelated(batch, dim, generator):
    """Views whose standardised cross-correlation is the identity: orthogonal, zero-mean
    columns at unit variance (so the 1e-5 stabiliser in the standardisation is negligible)."""
    centred = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    centred = centred - centred.mean(0)
    q, _ = torch.linalg.qr(centred)
    return q * batch**0.5


def test_the_visual_invariant_is_zero_when_c_is_the_identity():
    z = decorrelated(32, 8, torch.Generator().manual_seed(0))
    assert torch.allclose(cross_correlation(z, z), torch.eye(8, dtype=torch.float32), atol=1e-4)
    assert visual_invariant_loss(z, z).item() == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(embedding_pairs(min_batch=4), st.randoms(use_true_random=False))
def test_the_visual_invariant_ignores_per_feature_affine_rescale_and_batch_order(pair, random):
    z1, z2, generator = pair
    loss = visual_invariant_loss(z1, z2)
    scale = torch.rand(z1.shape[1], generator=generator, dtype=z1.dtype) * 5 + 0.2
    shift = torch.randn(z1.shape[1], generator=generator, dtype=z1.dtype) * 3
    assert visual_invariant_loss(z1 * scale + shift, z2).item() == pytest.approx(loss.item(), rel=1e-3, abs=1e-4)
    order = list(range(z1.shape[0]))
    random.shuffle(order)
    assert visual_invariant_loss(z1[order], z2[order]).item() == pytest.approx(loss.item(), rel=1e-4, abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(embedding_pairs(min_batch=8, max_batch=16))
def test_a_gradient_step_on_the_visual_invariant_pushes_off_diagonals_down(pair):
    z1, z2, _ = pair
    z1 = z1.float().requires_grad_(True)
    z2 = z2.float()
    before = cross_correlation(z1, z2)
    visual_invariant_loss(z1, z2, lambda_offdiagonal=1.0).backward()
    with torch.no_grad():
        after = cross_correlation(z1 - 0.05 * z1.grad, z2)
    off = ~torch.eye(before.shape[0], dtype=torch.bool)
    assert after[off].pow(2).sum() + (1 - after.diagonal()).pow(2).sum() < \
        before[off].pow(2).sum() + (1 - before.diagonal()).pow(2).sum()


def test_the_visual_invariant_refuses_a_batch_of_one():
    with pytest.raises(ValueError, match="visual-invariant \\(Barlow Twins\\) loss is undefined for batch size 1"):
        visual_invariant_loss(torch.randn(1, 8), torch.randn(1, 8))


def test_info_nce_matches_pytorch_cross_entropy_on_a_hand_case():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = a @ a.T / 0.5
    expected = F.cross_entropy(logits, torch.tensor([0, 1]))
    assert symmetric_info_nce(a, a, 0.5).item() == pytest.approx(expected.item())
