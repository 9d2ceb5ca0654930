"""The paper's noise schedule and sampler, as diffusers schedulers.

Section 4: 1000 training steps, linear betas from 0.00085 to 0.012, DDIM with 50
steps, eta 1.0 and guidance scale 2.0. The betas are set explicitly because the
diffusers classes default to other values (DDPMScheduler: 0.0001 to 0.02). Any
diffusers scheduler can replace DDIM at sampling time by class name; it inherits
the training schedule's betas through ``from_config``.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Callable, Mapping, Sequence, Union

import attrs
import diffusers
import torch
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from medm2g.core.errors import ConfigError
from medm2g.core.progress import step_done
from medm2g.core.structuring import one_of


def _unit_interval(instance, attribute, value) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{attribute.name} must be in [0, 1), got {value}")


PREDICTION_TYPES = ("epsilon", "v_prediction")


@attrs.frozen
class DiffusionConfig:
    """Noise schedule, sampler and classifier-free guidance (section 4 of the paper).

    ``condition_dropout`` is the fraction of training steps whose condition is replaced
    by the null condition, which is what lets ``guidance_scale`` work at sampling.
    ``prediction_type`` is what the denoisers learn to predict: ``v_prediction`` (v = sqrt(a) eps
    - sqrt(1 - a) z_0, the default), whose high-noise predictions are useful far earlier in
    training, or the paper's (Stable Diffusion's) ``epsilon`` (the ``paper`` preset). Measured on
    the phantom at the default steps (400 of 16): epsilon-trained image LDMs sampled blotches
    (text -> CT SSIM 0.18 on 100 held-out subjects) where the demo's v-predicting ones, trained
    for 300 steps of 8, sampled heads with a skull ring (0.39).
    """

    train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "linear"
    sampler: str = "DDIMScheduler"
    sampling_steps: int = 50
    eta: float = 1.0
    guidance_scale: float = 2.0
    condition_dropout: float = attrs.field(default=0.1, validator=_unit_interval)
    prediction_type: str = attrs.field(default="v_prediction", validator=one_of(PREDICTION_TYPES))


def training_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    """The forward process q(z_t | z_0) used to noise latents in training."""
    return DDPMScheduler(num_train_timesteps=config.train_timesteps, beta_start=config.beta_start,
                         beta_end=config.beta_end, beta_schedule=config.beta_schedule, clip_sample=False,
                         prediction_type=config.prediction_type)


def training_target(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    """What the denoiser is trained to output for z_t = add_noise(latents, noise, t): per the
    scheduler's prediction type, the noise or the velocity (the sampler reads it the same way)."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def sampling_scheduler(config: DiffusionConfig) -> SchedulerMixin:
    """The reverse-process scheduler named by ``config.sampler`` on the training betas."""
    cls = getattr(diffusers, config.sampler, None)
    if not (inspect.isclass(cls) and issubclass(cls, SchedulerMixin)):
        known = sorted(name for name in dir(diffusers) if name.endswith("Scheduler") and "Pipeline" not in name)
        close = difflib.get_close_matches(config.sampler, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"diffusion.sampler: {config.sampler!r} is not a diffusers scheduler{hint}")
    return cls.from_config(training_scheduler(config).config)


Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(latents, timestep) -> predicted noise, already guided."""

JointDenoise = Callable[[Mapping[str, torch.Tensor], torch.Tensor], Mapping[str, torch.Tensor]]
"""({modality: latents}, timestep) -> {modality: predicted noise}: several latents denoised together."""

Generators = Union[torch.Generator, Sequence[torch.Generator]]
"""One generator for the batch, or one per sample: with one per sample, sample i depends only on
its own generator, so it comes out the same whatever else is in the batch."""


def guided(denoise: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor], scale: float) -> Denoise:
    """Classifier-free guidance: eps_null + scale * (eps_cond - eps_null); scale 1 is plain conditioning."""
    def guided_denoise(latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        conditioned = denoise(latents, timestep, True)
        if scale == 1.0:
            return conditioned
        unconditioned = denoise(latents, timestep, False)
        return unconditioned + scale * (conditioned - unconditioned)
    return guided_denoise


def initial_noise(shape: tuple[int, ...], generator: Generators) -> torch.Tensor:
    """Gaussian noise drawn on the CPU (the same numbers on every device)."""
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator)
    return randn_tensor(shape, generator=list(generator), device=torch.device("cpu"))


@torch.no_grad()
def sample_jointly(denoise: JointDenoise, shapes: Mapping[str, tuple[int, ...]],
                   schedulers: Mapping[str, SchedulerMixin], steps: int, generator: Generators,
                   device: torch.device | str = "cpu", eta: float = 1.0) -> dict[str, torch.Tensor]:
    """Run the reverse process of several latents in lockstep, from Gaussian noise to z_0.

    At every timestep ``denoise`` sees all current latents, which is what joint
    generation needs (each modality's denoiser attends to the others' noisy latents).
    ``eta`` is passed to schedulers that take it (DDIM); every random draw comes from
    ``generator``, so a seed fixes the samples.
    """
    for scheduler in schedulers.values():
        scheduler.set_timesteps(steps, device=device)
    timesteps = next(iter(schedulers.values())).timesteps
    latents = {m: initial_noise(shape, generator).to(device) * schedulers[m].init_noise_sigma
               for m, shape in shapes.items()}
    if not isinstance(generator, torch.Generator):
        generator = list(generator)  # diffusers takes a list of per-sample generators
    extras = {m: {k: v for k, v in (("eta", eta), ("generator", generator))
                  if k in inspect.signature(scheduler.step).parameters}
              for m, scheduler in schedulers.items()}
    for done, timestep in enumerate(timesteps, start=1):
        inputs = {m: schedulers[m].scale_model_input(z, timestep) for m, z in latents.items()}
        noise = denoise(inputs, timestep)
        latents = {m: schedulers[m].step(noise[m], timestep, z, **extras[m]).prev_sample for m, z in latents.items()}
        step_done(done, len(timesteps))  # a listener (medm2g serve's progress bar), if one is listening
    return latents


def sample(denoise: Denoise, shape: tuple[int, ...], scheduler: SchedulerMixin, steps: int,
           generator: Generators, device: torch.device | str = "cpu", eta: float = 1.0) -> torch.Tensor:
    """One latent's reverse process: :func:`sample_jointly` with a single modality."""
    return sample_jointly(lambda latents, t: {"z": denoise(latents["z"], t)}, {"z": shape}, {"z": scheduler},
                          steps, generator, device, eta)["z"]
