"""The few-step VP schedule: marginals, one-step consistency and the posterior's closed form."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medm2g.core.backends.syndiff.schedule import AdversarialDiffusionSchedule


def test_four_steps_end_in_noise_and_compose_to_the_marginal():
    schedule = AdversarialDiffusionSchedule()
    alpha_bars, betas = schedule.alpha_bars(), schedule.betas()
    assert alpha_bars[0] == 1 and alpha_bars[-1] == pytest.approx(4.3e-5, rel=0.05)  # exp(-10.05)
    assert torch.all(betas > 0) and torch.all(betas < 1)
    torch.testing.assert_close(torch.cumprod(1 - betas, 0), alpha_bars[1:])  # steps compose to the marginal


@settings(max_examples=40, deadline=None)
@given(step=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_the_posterior_is_the_gaussian_product_of_the_marginal_and_one_forward_step(step, seed):
    """q(x_(i-1) | x_0, x_i) by Bayes from q(x_(i-1) | x_0) and q(x_i | x_(i-1)), computed independently."""
    schedule = AdversarialDiffusionSchedule()
    generator = torch.Generator().manual_seed(seed)
    x0, noisy = torch.randn(2, 3, generator=generator, dtype=torch.float64), torch.randn(2, 3, generator=generator,
                                                                                         dtype=torch.float64)
    previous, beta = schedule.alpha_bars()[step - 1], schedule.betas()[step - 1]
    prior_variance = 1 - previous
    if prior_variance == 0:  # i = 1: x_0 is known exactly
        expected_mean, expected_variance = x0, torch.zeros(())
    else:
        precision = 1 / prior_variance + (1 - beta) / beta
        expected_variance = 1 / precision
        expected_mean = expected_variance * (previous.sqrt() * x0 / prior_variance + (1 - beta).sqrt() * noisy / beta)
    mean, variance = schedule.posterior(x0, noisy, torch.full((2,), step))
    torch.testing.assert_close(mean, expected_mean)
    torch.testing.assert_close(variance.flatten()[0], expected_variance.to(variance.dtype))


def test_a_forward_step_from_the_marginal_has_the_next_marginal_s_statistics():
    schedule = AdversarialDiffusionSchedule()
    x0 = torch.full((20000, 1), 0.7)
    generator = torch.Generator().manual_seed(0)
    for step in range(1, 4):
        here = schedule.q_sample(x0, torch.full((20000,), step), torch.randn(20000, 1, generator=generator))
        there = schedule.q_step(here, torch.full((20000,), step + 1), torch.randn(20000, 1, generator=generator))
        alpha_bar = float(schedule.alpha_bars()[step + 1])
        assert float(there.mean()) == pytest.approx(alpha_bar**0.5 * 0.7, abs=0.02)
        assert float(there.var()) == pytest.approx(1 - alpha_bar, abs=0.03)


def test_a_schedule_needs_a_step():
    with pytest.raises(ValueError, match="steps must be at least 1"):
        AdversarialDiffusionSchedule(steps=0)
