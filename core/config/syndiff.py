"""SynDiff's settings: the ``syndiff`` section of a run config, read by every SynDiff stage."""

from __future__ import annotations

import attrs

from medm2g.core.structuring import group_norm_widths, non_negative, positive


@attrs.frozen
class SynDiffConfig:
    """Defaults from SynDiff's published MRI-CT command line (seed 003): 4 steps, generator lr
    1.6e-4, discriminator lr 1e-4, R1 gamma 1 every 10 steps, EMA 0.999; Adam betas (0.5, 0.9)
    as its denoising-diffusion-GAN origin; cycle weight 0.5. ``widths`` are the channel widths
    of every network's levels (SynDiff's own NCSN++ is far larger; these suit a CPU at 64 x 64)."""

    steps: int = attrs.field(default=4, validator=positive)
    beta_min: float = attrs.field(default=0.1, validator=positive)
    beta_max: float = attrs.field(default=20.0, validator=positive)
    latent_dim: int = attrs.field(default=64, validator=positive)
    widths: tuple[int, ...] = attrs.field(default=(32, 64, 128), converter=group_norm_widths)
    generator_learning_rate: float = attrs.field(default=1.6e-4, validator=positive)
    discriminator_learning_rate: float = attrs.field(default=1e-4, validator=positive)
    adam_betas: tuple[float, float] = (0.5, 0.9)
    r1_gamma: float = attrs.field(default=1.0, validator=non_negative)
    lazy_regularisation: int = attrs.field(default=10, validator=positive)
    ema_decay: float = attrs.field(default=0.999)
    cycle_weight: float = attrs.field(default=0.5, validator=non_negative)
    training_steps: int = attrs.field(default=600, validator=positive)
    batch_size: int = attrs.field(default=8, validator=positive)
    checkpoint_every: int = attrs.field(default=50, validator=positive)

    @ema_decay.validator
    def _fraction(self, attribute, value) -> None:
        if not 0 <= value < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {value}")
