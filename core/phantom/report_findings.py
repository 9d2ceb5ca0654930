"""Read the finding back out of a report written in the phantom cohort's vocabulary.

Clinical correctness of a generated report is whether it names the finding the truth
names: its type (or a normal study), its side and its lobe. The phantom's reports use
fixed terms (``plugins/text/phantom.py``), so a rule reader is exact on them; a report
in other words reads as "unknown", never as a guess.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

import attrs

from medm2g.core.metrics.proportion import Proportion
from medm2g.core.phantom.anatomy import REGIONS, SIDES

KIND_WORDS = {"haemorrhage": "haemorrhage", "infarct": "infarct", "mass": "tumour", "tumour": "tumour",
              "calcification": "calcification"}
NORMAL_PHRASES = ("no focal lesion", "unremarkable", "no evidence of", "normal brain")
UNKNOWN = "unknown"


@attrs.frozen
class ReportFinding:
    """``kind`` is a lesion type, "normal" or "unknown"; side and region are "none" for a normal study."""

    kind: str
    side: str
    region: str


def _first(words: Sequence[str], text: str) -> str:
    found = [(match.start(), word) for word in words for match in [re.search(rf"\b{word}\b", text)] if match]
    return min(found)[1] if found else UNKNOWN


def _read_section(text: str) -> ReportFinding:
    kind_word = _first(tuple(KIND_WORDS), text)
    if any(phrase in text for phrase in NORMAL_PHRASES) and not re.search(r"\b(left|right)\b", text):
        return ReportFinding("normal", "none", "none")
    kind = KIND_WORDS.get(kind_word, UNKNOWN)
    return ReportFinding(kind, _first(SIDES, text), _first(REGIONS, text))


def read_report_finding(report: str) -> ReportFinding:
    """The finding a report states, read from its findings section (or the whole text without one)."""
    return _read_section(" ".join(report.lower().split()).split("impression")[0])


def read_impression_finding(report: str) -> ReportFinding | None:
    """The finding a report's impression states, or None for a report without an impression."""
    sections = " ".join(report.lower().split()).split("impression", 1)
    return _read_section(sections[1]) if len(sections) == 2 else None


def contradiction(report: str) -> bool | None:
    """Whether the findings and the impression of ``report`` state a different finding type, or the
    same lesion on different sides (None where either cannot be read: not judged)."""
    findings, impression = read_report_finding(report), read_impression_finding(report)
    if impression is None or UNKNOWN in (findings.kind, impression.kind):
        return None
    if findings.kind != impression.kind:
        return True
    return UNKNOWN not in (findings.side, impression.side) and findings.side != impression.side


def contradiction_scores(reports: Sequence[str]) -> dict[str, float]:
    """``contradiction``: the share of readable reports whose findings and impression disagree (side
    or type), with its interval and n; nothing where no report could be judged."""
    judged = [c for c in map(contradiction, reports) if c is not None]
    return Proportion(sum(judged), len(judged)).as_scores("contradiction") if judged else {}


def finding_agreement(generated: Sequence[str], truth: Sequence[str]) -> dict[str, float]:
    """Accuracy of type, side and lobe of generated reports against the truth, with the chance level of
    each: the agreement expected if the generated findings were independent of the truth (from the
    two sets' own frequencies), which is what a generator ignoring its condition scores. Only
    truths the reader understands count; none understood gives no scores."""
    if len(generated) != len(truth) or not truth:
        raise ValueError(f"need one truth per generated report, got {len(generated)} and {len(truth)}")
    pairs = [(read_report_finding(g), read_report_finding(t)) for g, t in zip(generated, truth)]
    pairs = [(g, t) for g, t in pairs if t.kind != UNKNOWN]  # truths in other words cannot be judged
    if not pairs:
        return {}
    read_generated, read_truth = [g for g, _ in pairs], [t for _, t in pairs]
    scores = {}
    for field in ("kind", "side", "region"):
        scores.update(agreement_scores([getattr(f, field) for f in read_generated],
                                       [getattr(f, field) for f in read_truth], field))
    return scores


def agreement_scores(ours: Sequence[str], theirs: Sequence[str], field: str) -> dict[str, float]:
    """``<field>_accuracy`` with its Wilson interval and n (``_low``, ``_high``, ``_n``) and
    ``<field>_chance``: :func:`agreement` as scores a script reads."""
    accuracy, chance = agreement(ours, theirs)
    correct = sum(a == b for a, b in zip(ours, theirs))
    return {**Proportion(correct, len(ours)).as_scores(f"{field}_accuracy"), f"{field}_chance": chance}


def agreement(ours: Sequence[str], theirs: Sequence[str]) -> tuple[float, float]:
    """(accuracy, chance): the fraction of equal labels, and the fraction expected if the two
    label lists were independent with their own frequencies (what ignoring the truth scores)."""
    if len(ours) != len(theirs) or not ours:
        raise ValueError(f"need two equally long, non-empty label lists, got {len(ours)} and {len(theirs)}")
    accuracy = sum(a == b for a, b in zip(ours, theirs)) / len(ours)
    ours_counts, theirs_counts = Counter(ours), Counter(theirs)
    return accuracy, sum(ours_counts[k] * theirs_counts[k] for k in ours_counts) / len(ours) ** 2
