"""The paper's schedule and sampler: betas, determinism, swapping, guidance."""

import pytest
import torch

from medm2g.core.diffusion.schedule import (
    DiffusionConfig,
    guided,
    sample,
    sampling_scheduler,
    training_scheduler,
    training_target,
)
from medm2g.core.errors import ConfigError


def test_the_betas_are_the_papers_at_both_ends():
    scheduler = training_scheduler(DiffusionConfig())
    assert len(scheduler.betas) == 1000
    assert float(scheduler.betas[0]) == pytest.approx(0.00085)
    assert float(scheduler.betas[-1]) == pytest.approx(0.012)
    differences = scheduler.betas.diff()
    assert torch.allclose(differences, differences[0].expand_as(differences), rtol=1e-3)  # linear


def test_the_default_sampler_is_ddim_on_the_training_betas():
    sampler = sampling_scheduler(DiffusionConfig())
    assert type(sampler).__name__ == "DDIMScheduler"
    assert torch.equal(sampler.betas, training_scheduler(DiffusionConfig()).betas)
    sampler.set_timesteps(50)
    assert len(sampler.timesteps) == 50


def toy_denoiser(latents, timestep):
    return 0.1 * latents + 0.01 * torch.sin(latents * 3)


def test_ddim_with_eta_one_is_deterministic_under_a_seed_and_random_across_seeds():
    config = DiffusionConfig(sampling_steps=10)
    draws = [sample(toy_denoiser, (2, 4, 4, 4), sampling_scheduler(config), 10, torch.Generator().manual_seed(seed))
             for seed in (5, 5, 6)]
    assert torch.equal(draws[0], draws[1])
    assert not torch.allclose(draws[0], draws[2])
    assert torch.isfinite(draws[0]).all()


def test_any_diffusers_scheduler_can_be_swapped_in_by_name():
    config = DiffusionConfig(sampler="EulerDiscreteScheduler")
    sampler = sampling_scheduler(config)
    assert type(sampler).__name__ == "EulerDiscreteScheduler"
    assert float(sampler.betas[-1]) == pytest.approx(0.012)
    result = sample(toy_denoiser, (1, 4, 2, 2), sampler, 5, torch.Generator().manual_seed(0))
    assert torch.isfinite(result).all()
    with pytest.raises(ConfigError, match=r"diffusion.sampler: 'DDIMSchedular' is not a diffusers scheduler \(did you mean 'DDIMScheduler'\?\)"):
        sampling_scheduler(DiffusionConfig(sampler="DDIMSchedular"))


def test_guidance_extrapolates_from_the_null_condition():
    def denoise(latents, timestep, conditioned):
        return torch.full_like(latents, 3.0 if conditioned else 1.0)

    latents = torch.zeros(1, 2)
    assert torch.equal(guided(denoise, 2.0)(latents, 0), torch.full((1, 2), 5.0))  # 1 + 2 * (3 - 1)
    assert torch.equal(guided(denoise, 1.0)(latents, 0), torch.full((1, 2), 3.0))


def test_the_training_target_is_the_noise_or_the_velocity_the_run_names():
    latents, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    timesteps = torch.tensor([0, 500, 999])
    epsilon = training_scheduler(DiffusionConfig(prediction_type="epsilon"))
    assert torch.equal(training_target(epsilon, latents, noise, timesteps), noise)
    velocity = training_scheduler(DiffusionConfig(prediction_type="v_prediction"))
    alpha_bar = velocity.alphas_cumprod[timesteps].view(3, 1, 1, 1)
    expected = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents
    torch.testing.assert_close(training_target(velocity, latents, noise, timesteps), expected)
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionConfig(prediction_type="x0")


def test_runs_predict_the_velocity_unless_they_follow_the_paper():
    from medm2g.core.config.run_config import load_run_config

    assert DiffusionConfig().prediction_type == "v_prediction"
    assert load_run_config("paper").diffusion.prediction_type == "epsilon"  # Stable Diffusion's, as the paper
