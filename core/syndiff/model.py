"""SynDiff for one modality pair A-B, unpaired: the modules and the losses of one training step.

* **Non-diffusive module**: translators A->B and B->A (:class:`RegressionUNet`) with image
  critics. For a real target image, the other translator makes a *source estimate* in the
  other modality: the pseudo-pair the diffusive module learns from without paired data.
* **Diffusive module**: per target modality, a generator that takes x_i of the target, the
  source image and z, predicts x_0, and steps to x_(i-1) through the posterior; a step critic
  D(x_(i-1), x_i, i) judges that step against the forward process.
* **Cycle consistency**: A -> B (non-diffusive) -> A (diffusive) and B -> A -> B; the L1 of
  each loop's end to its start is what lets gradients from a real image reach both modules.

At inference, A -> B is the diffusive generator of B conditioned on the real A image:
T large steps from noise (:meth:`SynDiff.translate`).
"""

from __future__ import annotations

import copy

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from medm2g.core.baselines.regression import RegressionUNet
from medm2g.core.structuring import non_negative, positive
from medm2g.core.syndiff.losses import discriminator_loss, generator_loss, r1_penalty
from medm2g.core.syndiff.networks import DiffusiveGenerator, StepDiscriminator
from medm2g.core.syndiff.schedule import AdversarialDiffusionSchedule


@attrs.frozen
class SynDiffConfig:
    """Defaults from SynDiff's published MRI-CT command line (seed 003): 4 steps, generator lr
    1.6e-4, discriminator lr 1e-4, R1 gamma 1 every 10 steps, EMA 0.999; Adam betas (0.5, 0.9)
    as its denoising-diffusion-GAN origin; cycle weight 0.5."""

    steps: int = attrs.field(default=4, validator=positive)
    beta_min: float = attrs.field(default=0.1, validator=positive)
    beta_max: float = attrs.field(default=20.0, validator=positive)
    latent_dim: int = attrs.field(default=64, validator=positive)
    generator_learning_rate: float = attrs.field(default=1.6e-4, validator=positive)
    discriminator_learning_rate: float = attrs.field(default=1e-4, validator=positive)
    adam_betas: tuple[float, float] = (0.5, 0.9)
    r1_gamma: float = attrs.field(default=1.0, validator=non_negative)
    lazy_regularisation: int = attrs.field(default=10, validator=positive)
    ema_decay: float = 0.999
    cycle_weight: float = attrs.field(default=0.5, validator=non_negative)
    training_steps: int = attrs.field(default=600, validator=positive)
    batch_size: int = attrs.field(default=8, validator=positive)

    @property
    def schedule(self) -> AdversarialDiffusionSchedule:
        return AdversarialDiffusionSchedule(self.steps, self.beta_min, self.beta_max)


class SynDiff(nn.Module):
    def __init__(self, a: str, b: str, channels: dict[str, int], size: int, config: SynDiffConfig):
        super().__init__()
        self.a, self.b, self.config = a, b, config
        self.schedule = config.schedule
        self.diffusive = nn.ModuleDict({m: DiffusiveGenerator(channels[m], channels[o], size, config.steps,
                                                              config.latent_dim) for m, o in ((a, b), (b, a))})
        self.translators = nn.ModuleDict({f"{s}_to_{t}": RegressionUNet(channels[s], channels[t], size)
                                          for s, t in ((a, b), (b, a))})
        self.step_critics = nn.ModuleDict({m: StepDiscriminator(channels[m], config.steps) for m in (a, b)})
        self.image_critics = nn.ModuleDict({m: StepDiscriminator(channels[m], config.steps, time_conditioned=False)
                                            for m in (a, b)})
        self.ema = copy.deepcopy(self.diffusive).requires_grad_(False)

    def generators(self) -> list[nn.Parameter]:
        return [*self.diffusive.parameters(), *self.translators.parameters()]

    def critics(self) -> list[nn.Parameter]:
        return [*self.step_critics.parameters(), *self.image_critics.parameters()]

    def _diffusion_step(self, target: torch.Tensor, generator: torch.Generator):
        """A random step i per sample, the real pair (x_(i-1), x_i) and the noise for the fake one."""
        size = target.shape[0]
        step = torch.randint(1, self.config.steps + 1, (size,), generator=generator).to(target.device)
        previous = self.schedule.q_sample(target, step - 1, torch.randn(target.shape, generator=generator).to(target))
        noisy = self.schedule.q_step(previous, step, torch.randn(target.shape, generator=generator).to(target))
        posterior_noise = torch.randn(target.shape, generator=generator).to(target)
        latent = torch.randn(size, self.config.latent_dim, generator=generator).to(target)
        return step, previous, noisy, posterior_noise, latent

    def losses(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(generator loss, critic loss without R1, logs) of one unpaired batch {a: ..., b: ...}.
        The critic loss sees the generators' outputs detached; the generator loss trains both modules."""
        real = {self.a: batch[self.a], self.b: batch[self.b]}
        other = {self.a: self.b, self.b: self.a}
        generator_terms, critic_terms, logs = [], [], {}
        for target in (self.a, self.b):
            source = other[target]
            estimate = self.translators[f"{target}_to_{source}"](real[target])  # the pseudo-pair's source
            step, previous, noisy, posterior_noise, latent = self._diffusion_step(real[target], generator)
            x0 = self.diffusive[target](noisy, estimate, step, latent)
            fake_previous = self.schedule.posterior_sample(x0, noisy, step, posterior_noise)
            critic = self.step_critics[target]
            cycle = F.l1_loss(x0, real[target])  # target -> source (non-diffusive) -> target (diffusive)
            translated = self.translators[f"{source}_to_{target}"](real[source])
            generator_terms += [generator_loss(critic(fake_previous, noisy, step)),
                                generator_loss(self.image_critics[target](translated)),
                                self.config.cycle_weight * cycle]
            critic_terms += [discriminator_loss(critic(previous, noisy, step), critic(fake_previous.detach(), noisy, step)),
                             discriminator_loss(self.image_critics[target](real[target]),
                                                self.image_critics[target](translated.detach()))]
            logs[f"cycle_{target}"] = float(cycle.detach())
        return sum(generator_terms), sum(critic_terms), logs

    def r1(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """gamma / 2 * R1 of every critic on real data."""
        terms = []
        for target in (self.a, self.b):
            real = batch[target]
            step, previous, noisy, _, _ = self._diffusion_step(real, generator)
            previous = previous.detach().requires_grad_(True)
            terms.append(r1_penalty(self.step_critics[target](previous, noisy, step), [previous]))
            image = real.detach().requires_grad_(True)
            terms.append(r1_penalty(self.image_critics[target](image), [image]))
        return self.config.r1_gamma / 2 * sum(terms)

    @torch.no_grad()
    def update_ema(self) -> None:
        for average, live in zip(self.ema.parameters(), self.diffusive.parameters()):
            average.lerp_(live, 1 - self.config.ema_decay)

    @torch.no_grad()
    def translate(self, source: torch.Tensor, target: str, generator: torch.Generator | list[torch.Generator],
                  use_ema: bool = True) -> torch.Tensor:
        """``target`` images from ``source`` images of the other modality in T reverse steps."""
        network = (self.ema if use_ema else self.diffusive)[target]
        generators = generator if isinstance(generator, list) else [generator] * source.shape[0]
        shape = (1, network.unet.config.out_channels, *source.shape[-2:])
        noisy = torch.cat([torch.randn(shape, generator=g) for g in generators]).to(source)
        for index in range(self.config.steps, 0, -1):
            step = torch.full((source.shape[0],), index, device=source.device)
            latent = torch.cat([torch.randn(1, self.config.latent_dim, generator=g) for g in generators]).to(source)
            x0 = network(noisy, source, step, latent)
            noise = torch.cat([torch.randn(shape, generator=g) for g in generators]).to(source)
            noisy = self.schedule.posterior_sample(x0, noisy, step, noise)
        return noisy.clamp(-1, 1)
