"""Radiology reports for the phantom cohort: the finding stated with anatomy and pathology terms.

Sentences are drawn from a few phrasings so the text model sees variety, but every
report names the finding's type, side, lobe and size when there is one, and states
a normal study otherwise. Wording stays modality-neutral (no "hyperdense"), since the
same report pairs with CT and with X-ray.
"""

from __future__ import annotations

import torch

from medm2g.core.phantom.anatomy import Finding
from medm2g.registry import PhantomRendering

PATHOLOGY = {"haemorrhage": "haemorrhage", "infarct": "infarct", "tumour": "mass", "calcification": "calcification"}
IMPRESSION = {"haemorrhage": "haemorrhage", "infarct": "acute infarct", "tumour": "mass, likely tumour",
              "calcification": "calcification"}

FINDING_SENTENCES = (
    "There is {a_size} mm {pathology} in the {side} {region} lobe.",
    "{A_pathology} measuring {size} mm is seen in the {side} {region} lobe.",
    "{Side} {region} lobe {pathology} measuring approximately {size} mm.",
)
CONTEXT_SENTENCES = (
    "The ventricles are normal in size.",
    "No midline shift.",
    "The skull is intact.",
    "Grey and white matter differentiation is preserved elsewhere.",
)
NORMAL_SENTENCES = (
    "No focal lesion is identified.",
    "The brain parenchyma is unremarkable.",
    "No evidence of haemorrhage, infarct or mass.",
)


def with_article(word: str) -> str:
    """'an infarct', 'a mass', 'an 18', 'a 24': by sound, including spoken numbers."""
    spoken_vowel = word[0] in "aeiou" or word.startswith("8") or word in ("11", "18")
    return f"{'an' if spoken_vowel else 'a'} {word}"


def _choose(options, generator: torch.Generator) -> str:
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def report(finding: Finding, generator: torch.Generator) -> str:
    context = [s for s in CONTEXT_SENTENCES if torch.rand((1,), generator=generator).item() < 0.5]
    if finding.is_normal:
        findings = [_choose(NORMAL_SENTENCES, generator), *context]
        impression = "Normal brain."
    else:
        size, pathology = str(int(round(finding.diameter_mm))), PATHOLOGY[finding.kind]
        sentence = _choose(FINDING_SENTENCES, generator).format(
            size=size, a_size=with_article(size), pathology=pathology,
            A_pathology=with_article(pathology).capitalize(), side=finding.side,
            Side=finding.side.capitalize(), region=finding.region,
        )
        findings = [sentence, *context]
        impression = f"{finding.side.capitalize()} {finding.region} {IMPRESSION[finding.kind]}."
    return f"Findings: {' '.join(findings)} Impression: {impression}"


def render(spec, subject, generator: torch.Generator) -> PhantomRendering:
    return PhantomRendering({"report": report(subject.finding, generator)})
