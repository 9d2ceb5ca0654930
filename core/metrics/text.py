"""BLEU-1..4 and ROUGE-L for generated reports, implemented here so nothing downloads at run time.

Tokens are lowercase words and single punctuation marks, so "Impression: left" and
"impression : left" (the text VAE's decoded spacing) score alike. BLEU is corpus BLEU
(Papineni et al. 2002): clipped n-gram precisions summed over the corpus, their
geometric mean up to n, times the brevity penalty exp(1 - r/c) when the candidates are
shorter than the references; no smoothing, so a corpus without a matching 4-gram scores
BLEU-4 = 0. ROUGE-L (Lin 2004) is the F1 of longest-common-subsequence recall and
precision per report (beta = 1, as the rouge-score package uses), averaged over reports.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?|[^\sa-z0-9]")


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _check_lengths(candidates: Sequence[str], references: Sequence[str]) -> None:
    if len(candidates) != len(references) or not candidates:
        raise ValueError(f"need one reference per candidate and at least one pair, got {len(candidates)} "
                         f"candidates and {len(references)} references")


def corpus_bleu(candidates: Sequence[str], references: Sequence[str], max_order: int = 4) -> dict[int, float]:
    """{n: BLEU-n} for n = 1..max_order, one reference per candidate."""
    _check_lengths(candidates, references)
    matches, totals = [0] * max_order, [0] * max_order
    candidate_length = reference_length = 0
    for candidate, reference in zip(candidates, references):
        words, truth = tokens(candidate), tokens(reference)
        candidate_length += len(words)
        reference_length += len(truth)
        for n in range(1, max_order + 1):
            counts, reference_counts = _ngrams(words, n), _ngrams(truth, n)
            matches[n - 1] += sum(min(count, reference_counts[gram]) for gram, count in counts.items())
            totals[n - 1] += max(len(words) - n + 1, 0)
    if candidate_length == 0:
        return {n: 0.0 for n in range(1, max_order + 1)}
    brevity = 1.0 if candidate_length > reference_length else math.exp(1 - reference_length / candidate_length)
    scores, log_sum = {}, 0.0
    for n in range(1, max_order + 1):
        precision = matches[n - 1] / totals[n - 1] if totals[n - 1] else 0.0
        if precision == 0.0:
            scores.update({m: 0.0 for m in range(n, max_order + 1)})
            break
        log_sum += math.log(precision)
        scores[n] = brevity * math.exp(log_sum / n)
    return scores


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str, beta: float = 1.0) -> float:
    """F-beta of LCS precision and recall between one report and its reference (0 when either is
    empty): F1 by default, as the rouge-score package; the COCO caption evaluation uses beta 1.2."""
    words, truth = tokens(candidate), tokens(reference)
    common = _lcs_length(words, truth)
    if common == 0:
        return 0.0
    precision, recall = common / len(words), common / len(truth)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def mean_rouge_l(candidates: Sequence[str], references: Sequence[str], beta: float = 1.0) -> float:
    _check_lengths(candidates, references)
    return sum(rouge_l(c, r, beta) for c, r in zip(candidates, references)) / len(candidates)
