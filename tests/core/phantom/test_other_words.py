"""Reports in other words keep the finding and leave the cohort's template behind."""

import itertools

import torch

from medm2g.core.phantom.anatomy import Finding
from medm2g.core.phantom.other_words import KIND_WORDS, PHRASINGS, in_other_words
from medm2g.core.phantom.report_findings import UNKNOWN, read_report_finding
from medm2g.plugins.text.phantom import report

KINDS = tuple(KIND_WORDS)
SIDES = ("left", "right")
REGIONS = ("frontal", "parietal", "temporal", "occipital")
OUTSIDE_TEMPLATE = ("bleed", "hematoma", "hemisphere", "stroke", "neoplasm", "-sided", "ischemi", "calcific ")


def findings():
    return [Finding(kind, side, region, diameter_mm=24.0) for kind, side, region in itertools.product(KINDS, SIDES, REGIONS)]


def test_every_phrasing_keeps_side_and_lobe_and_avoids_the_templates_words_and_scaffold():
    for index, finding in enumerate(findings() * len(PHRASINGS)):
        text = in_other_words(finding, index)
        words = text.lower()
        assert finding.side in words and finding.region in words, text
        assert "findings:" not in words and "impression:" not in words
        assert not any(term in words for term in ("haemorrhage", "infarct ", "infarct.", " mass")), text
        assert read_report_finding(text).kind == UNKNOWN  # the cohort's rule reader cannot read it: other words


def test_the_cohorts_own_reports_never_use_the_other_words():
    generator = torch.Generator().manual_seed(0)
    for finding in findings() * 5 + [Finding("normal")] * 10:
        text = report(finding, generator).lower()
        assert not any(term in text for term in OUTSIDE_TEMPLATE), text


def test_phrasings_cycle_over_subjects_so_every_one_is_scored():
    finding = Finding("haemorrhage", "right", "temporal", diameter_mm=30.0)
    assert len({in_other_words(finding, i) for i in range(len(PHRASINGS) * 4)}) == len(PHRASINGS) * 4
