"""SynDiff's modules and losses: gradients flow where the method says, the critic sees the step."""

import attrs
import pytest
import torch

from medm2g.core.backends.syndiff.model import SynDiff
from medm2g.core.backends.syndiff.networks import StepDiscriminator
from medm2g.core.config.syndiff import SynDiffConfig


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(0)
    return {"mri": torch.rand(2, 1, 32, 32, generator=generator) * 2 - 1,
            "ct": torch.rand(2, 1, 32, 32, generator=generator) * 2 - 1}


def _model(**changes) -> SynDiff:
    torch.manual_seed(0)
    return SynDiff("mri", "ct", {"mri": 1, "ct": 1}, 32, attrs.evolve(SynDiffConfig(latent_dim=8), **changes))


def _translator_gradient(model: SynDiff, batch) -> torch.Tensor:
    loss, _, _ = model.losses(batch, torch.Generator().manual_seed(1))
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.translators["mri_to_ct"].parameters() if p.grad is not None])


def test_the_cycle_loss_carries_gradients_back_to_the_non_diffusive_translators(batch):
    with_cycle = _translator_gradient(_model(), batch)
    without_cycle = _translator_gradient(_model(cycle_weight=0.0), batch)
    assert with_cycle.abs().sum() > 0
    assert not torch.allclose(with_cycle, without_cycle)  # the cycle term's share of the gradient


def test_the_generator_loss_leaves_the_critics_untouched_and_the_critic_loss_the_generators(batch):
    model = _model()
    generator_loss, critic_loss, logs = model.losses(batch, torch.Generator().manual_seed(2))
    assert set(logs) == {"cycle_mri", "cycle_ct"}
    model.zero_grad()
    critic_loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.generators())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.critics())


def test_the_step_critic_sees_the_step():
    critic = StepDiscriminator(1, steps=4)
    image, noisier = torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32)
    first, last = critic(image, noisier, torch.tensor([1])), critic(image, noisier, torch.tensor([4]))
    assert not torch.allclose(first, last)
    with pytest.raises(ValueError, match="give the noisier image and the step"):
        critic(image)


def test_r1_is_a_finite_positive_penalty_that_trains_the_critics(batch):
    model = _model()
    penalty = model.r1(batch, torch.Generator().manual_seed(3))
    assert torch.isfinite(penalty) and penalty > 0
    penalty.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.step_critics.parameters())


def test_translation_takes_the_configured_steps_and_is_reproducible_per_sample(batch, monkeypatch):
    model = _model()
    calls = []
    network = model.ema["ct"]
    original = network.forward
    monkeypatch.setattr(network, "forward", lambda *args: calls.append(1) or original(*args))
    generators = [torch.Generator().manual_seed(s) for s in (5, 6)]
    both = model.translate(batch["mri"], "ct", generators)
    assert both.shape == (2, 1, 32, 32) and both.abs().max() <= 1 and len(calls) == 4
    alone = model.translate(batch["mri"][1:], "ct", [torch.Generator().manual_seed(6)])
    torch.testing.assert_close(alone[0], both[1], atol=1e-5, rtol=0)


def test_ema_moves_toward_the_live_weights():
    model = _model(ema_decay=0.5)
    live = next(model.diffusive.parameters())
    average = next(model.ema.parameters())
    with torch.no_grad():
        live.add_(1.0)
    before = average.clone()
    model.update_ema()
    torch.testing.assert_close(average, before + 0.5)


def test_the_ema_decay_warms_up_so_a_short_run_is_not_its_initialisation():
    model = _model(ema_decay=0.999)
    live, average = next(model.diffusive.parameters()), next(model.ema.parameters())
    with torch.no_grad():
        live.add_(1.0)
    before = average.clone()
    model.update_ema(step=0)  # decay min(0.999, 1 / 10): 90 % of the way
    torch.testing.assert_close(average, before + 0.9)
    model.update_ema(step=10**6)  # long after warm-up the configured decay holds
    torch.testing.assert_close(average, before + 0.9 + 0.1 * 0.001)
