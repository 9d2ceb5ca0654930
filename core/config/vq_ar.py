"""The ``vq-ar`` backend's settings: the ``vq_ar`` section of a run config.

Three parts train in one stage per ``backend: vq-ar`` edge, in order: the VQ-GAN codebook of the
edge's imaging modality, the word-patch alignment of prompt words with its codebook patches, and
the GPT-2-style transformer that predicts the image's tokens from the prompt, the instruction and
the key patches. The defaults suit a CPU at 64 x 64 (a 16 x 16 token grid); the seed paper's
models (a VQ-GAN with a 16384-entry codebook, a 7B language model) are far larger.
"""

from __future__ import annotations

import attrs

from medm2g.core.structuring import fraction, group_norm_widths, non_negative, positive


@attrs.frozen
class VQArConfig:
    """``codebook_size`` entries of ``code_dim`` each; the VQ-GAN halves the image once per width
    after the first (``widths`` (32, 64, 64): a quarter of the image's side per token).
    ``discriminator_start``: the step of the codebook's training at which the patch discriminator's
    hinge loss joins the reconstruction (a VQ-GAN's warm-up), weighted ``adversarial_weight``.
    ``alignment_saliency``: weight of the saliency prior (how far a patch departs from its mirror
    place and from the cohort's typical entry) added to each word-patch similarity before a word's
    best patch is taken; ``typical_mirror_share``: the share of the alignment's training images
    whose asymmetry is taken against the typical entries instead of their own mirror, the view key
    patches are chosen in (see :mod:`medm2g.core.backends.vq_ar.alignment`).
    ``key_patches``: codebook entries chosen per prompt term by the word-patch similarities.
    ``top_k`` and ``temperature`` shape the transformer's sampling of each token."""

    instruction: str = "generate the image of this prompt"
    codebook_size: int = attrs.field(default=128, validator=positive)
    code_dim: int = attrs.field(default=16, validator=positive)
    widths: tuple[int, ...] = attrs.field(default=(32, 64, 64), converter=group_norm_widths)
    codebook_steps: int = attrs.field(default=1500, validator=positive)
    codebook_learning_rate: float = attrs.field(default=4e-4, validator=positive)
    discriminator_start: int = attrs.field(default=500, validator=non_negative)
    adversarial_weight: float = attrs.field(default=0.1, validator=non_negative)
    dead_code_restart_every: int = attrs.field(default=100, validator=non_negative)
    alignment_dim: int = attrs.field(default=64, validator=positive)
    alignment_steps: int = attrs.field(default=800, validator=positive)
    alignment_learning_rate: float = attrs.field(default=1e-3, validator=positive)
    alignment_saliency: float = attrs.field(default=0.05, validator=non_negative)
    typical_mirror_share: float = attrs.field(default=0.5, validator=fraction)
    key_patches: int = attrs.field(default=2, validator=positive)
    transformer_width: int = attrs.field(default=128, validator=positive)
    transformer_layers: int = attrs.field(default=4, validator=positive)
    transformer_heads: int = attrs.field(default=4, validator=positive)
    transformer_steps: int = attrs.field(default=2000, validator=positive)
    transformer_learning_rate: float = attrs.field(default=5e-4, validator=positive)
    top_k: int = attrs.field(default=16, validator=positive)
    temperature: float = attrs.field(default=1.0, validator=positive)
    batch_size: int = attrs.field(default=16, validator=positive)
    checkpoint_every: int = attrs.field(default=100, validator=positive)

    @transformer_heads.validator
    def _divides(self, attribute, value) -> None:
        if self.transformer_width % value:
            raise ValueError(f"transformer_heads ({value}) must divide transformer_width ({self.transformer_width})")

    @property
    def steps(self) -> int:
        """All three parts' steps: the stage's length."""
        return self.codebook_steps + self.alignment_steps + self.transformer_steps
