"""Reports in other words: the phantom's findings written as radiologists write them, not as its template does.

Real reports are not written from a template. A generator that places a finding on its side only
when the report says "right temporal lobe haemorrhage" has learned the template, not the finding.
These phrasings use words the cohort's reports never contain ("bleed", "hematoma", "left-sided",
"hemisphere", "stroke", "neoplasm" ...), other word orders, and no "Findings:/Impression:"
scaffold. They are never written into a cohort, so no stage trains on them; they exist only to be
conditioned on at evaluation (:mod:`medm2g.core.evaluation.other_words`).

Each subject gets one phrasing, chosen by its index, so a score covers every phrasing evenly and
is the same on every run.
"""

from __future__ import annotations

from medm2g.core.phantom.anatomy import Finding

KIND_WORDS = {
    "haemorrhage": ("bleed", "hematoma", "intraparenchymal hemorrhage", "acute bleed"),
    "infarct": ("stroke", "ischemic infarction", "area of ischemia", "established stroke"),
    "tumour": ("neoplasm", "space-occupying lesion", "tumor", "solid lesion"),
    "calcification": ("calcified focus", "calcific density", "dense calcified nodule", "calcified lesion"),
}
"""Per finding type, words the phantom's template never uses (it says haemorrhage, infarct, mass, calcification)."""

PHRASINGS = (
    "{Side}-sided {region} {kind}, about {cm} cm across.",
    "There is a {kind} in the {region} region of the {side} hemisphere, roughly {size} mm.",
    "{Kind} involving the {side} {region} cortex and white matter ({size} mm); the rest of the brain looks normal.",
    "{size} mm {kind} is noted within the {side} {region} territory; surrounding parenchyma otherwise normal.",
    "Known {kind} in the {region} lobe on the {side}, measuring {cm} cm.",
)
NORMAL_PHRASINGS = (
    "Unremarkable study of the brain.",
    "No acute intracranial abnormality.",
    "Brain within normal limits; no bleed, stroke or space-occupying lesion.",
)


def in_other_words(finding: Finding, index: int) -> str:
    """Subject ``index``'s finding in the ``index``-th phrasing (cycling), with its own words for the type."""
    if finding.is_normal:
        return NORMAL_PHRASINGS[index % len(NORMAL_PHRASINGS)]
    words = KIND_WORDS[finding.kind]
    kind = words[(index // len(PHRASINGS)) % len(words)]
    size = int(round(finding.diameter_mm or 20))
    return PHRASINGS[index % len(PHRASINGS)].format(
        side=finding.side, Side=finding.side.capitalize(), region=finding.region, kind=kind,
        Kind=kind[0].upper() + kind[1:], size=size, cm=f"{size / 10:.1f}")
