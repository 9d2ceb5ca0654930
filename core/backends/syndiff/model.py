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

from medm2g.core.backends.syndiff.losses import discriminator_loss, generator_loss, r1_penalty
from medm2g.core.backends.syndiff.networks import DiffusiveGenerator, StepDiscriminator
from medm2g.core.backends.syndiff.schedule import AdversarialDiffusionSchedule
from medm2g.core.config.syndiff import SynDiffConfig
from medm2g.core.models.translation_unet import RegressionUNet


@attrs.frozen
class DiffusionStep:
    """One large reverse step of a target modality: the step i, the real pair (x_(i-1), x_i), the
    generator's x_0 estimate and the x_(i-1) sampled from the posterior around it."""

    step: torch.Tensor
    previous: torch.Tensor
    noisy: torch.Tensor
    x0: torch.Tensor
    fake_previous: torch.Tensor


@attrs.frozen
class GeneratorPass:
    real: dict
    translated: dict
    steps: dict


class SynDiff(nn.Module):
    def __init__(self, a: str, b: str, channels: dict[str, int], size: int, config: SynDiffConfig):
        super().__init__()
        self.a, self.b, self.config = a, b, config
        self.schedule = AdversarialDiffusionSchedule(config.steps, config.beta_min, config.beta_max)
        widths = config.widths
        self.diffusive = nn.ModuleDict({m: DiffusiveGenerator(channels[m], channels[o], size, config.steps,
                                                              config.latent_dim, widths)
                                        for m, o in ((a, b), (b, a))})
        self.translators = nn.ModuleDict({f"{s}_to_{t}": RegressionUNet(channels[s], channels[t], size, widths)
                                          for s, t in ((a, b), (b, a))})
        self.step_critics = nn.ModuleDict({m: StepDiscriminator(channels[m], config.steps, widths=widths)
                                           for m in (a, b)})
        self.image_critics = nn.ModuleDict({m: StepDiscriminator(channels[m], config.steps, time_conditioned=False,
                                                                 widths=widths) for m in (a, b)})
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

    def generator_pass(self, batch: dict, generator: torch.Generator) -> "GeneratorPass":
        """Everything the generators produce in one step, with gradients. Both halves of the step use
        it: the critics see its outputs detached, and the generator loss is computed on it after the
        critics have stepped (a generator's outputs do not depend on the critics' weights), so each
        step runs the four generator networks once."""
        real = {self.a: batch[self.a], self.b: batch[self.b]}
        other = {self.a: self.b, self.b: self.a}
        # translated[m]: the non-diffusive translation *into* m of the other modality's real image. It is
        # both m's fake for m's image critic and, for the other modality's diffusive generator, the
        # pseudo-pair's source estimate.
        translated = {m: self.translators[f"{other[m]}_to_{m}"](real[other[m]]) for m in (self.a, self.b)}
        steps = {}
        for target in (self.a, self.b):
            step, previous, noisy, posterior_noise, latent = self._diffusion_step(real[target], generator)
            x0 = self.diffusive[target](noisy, translated[other[target]], step, latent)
            fake_previous = self.schedule.posterior_sample(x0, noisy, step, posterior_noise)
            steps[target] = DiffusionStep(step, previous, noisy, x0, fake_previous)
        return GeneratorPass(real, translated, steps)

    def critic_loss(self, outputs: "GeneratorPass") -> torch.Tensor:
        """The critics' loss (without R1) on real data against the generators' outputs, detached."""
        terms = []
        for target, made in outputs.steps.items():
            critic = self.step_critics[target]
            terms.append(discriminator_loss(critic(made.previous, made.noisy, made.step),
                                            critic(made.fake_previous.detach(), made.noisy, made.step)))
            terms.append(discriminator_loss(self.image_critics[target](outputs.real[target]),
                                            self.image_critics[target](outputs.translated[target].detach())))
        return sum(terms)

    def generator_loss(self, outputs: "GeneratorPass") -> tuple[torch.Tensor, dict]:
        """Adversarial terms of both modules plus the weighted cycle L1 (target -> source by the
        non-diffusive translator -> target by the diffusive generator); and the cycle L1s to log."""
        terms, logs = [], {}
        for target, made in outputs.steps.items():
            cycle = F.l1_loss(made.x0, outputs.real[target])
            terms += [generator_loss(self.step_critics[target](made.fake_previous, made.noisy, made.step)),
                      generator_loss(self.image_critics[target](outputs.translated[target])),
                      self.config.cycle_weight * cycle]
            logs[f"cycle_{target}"] = float(cycle.detach())
        return sum(terms), logs

    def losses(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(generator loss, critic loss without R1, logs) of one unpaired batch {a: ..., b: ...}.
        The critic loss sees the generators' outputs detached; the generator loss trains both modules."""
        outputs = self.generator_pass(batch, generator)
        total, logs = self.generator_loss(outputs)
        return total, self.critic_loss(outputs), logs

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
    def update_ema(self, step: int | None = None) -> None:
        """Move the EMA toward the live generators after optimisation step ``step`` (0-based). The
        decay warms up as min(decay, (1 + step) / (10 + step)): with 0.999 from the start, the
        average of a few hundred steps would still be mostly the random initialisation."""
        decay = self.config.ema_decay if step is None else min(self.config.ema_decay, (1 + step) / (10 + step))
        for average, live in zip(self.ema.parameters(), self.diffusive.parameters()):
            average.lerp_(live, 1 - decay)

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
