"""The ablation rows (eight, and two for prompting) and the run config each one trains with.

* **CA** (central alignment): the InfoNCE term of the alignment stages. Without it the
  prompt encoders are not pulled into one space, so a condition of modality X means
  nothing to Y's denoiser beyond what its own modality's encoder taught it.
* **VI** (visual invariant): the Barlow Twins term on two views of each imaging modality.
* **LCAG** (latent cross-guided generation): the multi-flow rounds, after which a condition
  with cross-guided parts also guides through its noised latent (V_X([z_t^X, f_X])).
  Without them, generation uses the single-modality LDMs and the prompt embedding alone.
* **prompts** (anatomy-pathology prompting, the third seed paper's): the full method with the
  report encoder reading each report's prompt instead of the report (``prompting.condition_on_prompts``),
  in alignment, the LDMs, the rounds and generation: what prompting adds.

Rows with and without LCAG share one training run: the LCAG-off row is scored before the
rounds, the LCAG-on row after them. With neither CA nor VI there is nothing to optimise
in alignment: the encoders keep their seeded initialisation (one zero-gradient step, so the
stage still writes them).
"""

from __future__ import annotations

import attrs

from medm2g.core.config.run_config import RunConfig, with_overrides
from medm2g.core.errors import ConfigError


@attrs.frozen
class EncoderVariant:
    """One way of training the prompt encoders: with or without CA and VI."""

    central_alignment: bool
    visual_invariant: bool
    prompts: bool = False

    @property
    def name(self) -> str:
        return f"ca{int(self.central_alignment)}-vi{int(self.visual_invariant)}" + ("-prompts" if self.prompts else "")

    def config(self, base: RunConfig) -> RunConfig:
        changes = {"alignment.visual_invariant": self.visual_invariant,
                   "prompting.condition_on_prompts": self.prompts}
        if not self.central_alignment:
            changes["alignment.info_nce_weight"] = 0.0
            changes["alignment.learn_temperature"] = False
            if not self.visual_invariant:
                changes["alignment.steps"] = 1
        return with_overrides(base, **changes)


@attrs.frozen
class AblationRow:
    central_alignment: bool
    cross_guided: bool
    visual_invariant: bool
    prompts: bool = False

    @property
    def encoders(self) -> EncoderVariant:
        return EncoderVariant(self.central_alignment, self.visual_invariant, self.prompts)

    @property
    def label(self) -> str:
        return " ".join(f"{name}{'+' if on else '-'}" for name, on in
                        (("CA", self.central_alignment), ("LCAG", self.cross_guided), ("VI", self.visual_invariant))) \
            + (" prompts" if self.prompts else "")


ENCODER_VARIANTS = (EncoderVariant(True, True), EncoderVariant(True, False), EncoderVariant(False, True),
                    EncoderVariant(False, False), EncoderVariant(True, True, prompts=True))
"""Full method first: its VAEs are trained once and reused by the others (VAEs see neither CA, VI nor
prompts: the report VAE encodes reports, whatever the report encoder reads)."""
ROWS = tuple(AblationRow(v.central_alignment, lcag, v.visual_invariant, v.prompts)
             for v in ENCODER_VARIANTS for lcag in (False, True))


def encoder_variants(names: str | None) -> tuple[EncoderVariant, ...]:
    """The variants named in a comma-separated list (all of them for None), in the ablation's order, so
    the first one that runs is still the one whose cohort and VAEs the others reuse."""
    if not names:
        return ENCODER_VARIANTS
    known = {v.name: v for v in ENCODER_VARIANTS}
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise ConfigError(f"--encoders {names!r}: unknown variant(s) {', '.join(unknown) or '(none named)'}; "
                          f"expected a comma-separated list of {', '.join(known)}")
    return tuple(v for v in ENCODER_VARIANTS if v.name in wanted)
