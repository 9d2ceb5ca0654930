"""The COCO caption evaluation (pycocoevalcap) beside medm2g's own BLEU and ROUGE-L: where both
compute the same thing, they agree; CIDEr-D, which medm2g lacks, behaves as CIDEr should."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medm2g.core.metrics.coco_caption import COCO_METRICS, coco_caption_scores
from medm2g.core.metrics.text import corpus_bleu, mean_rouge_l

pytest.importorskip("pycocoevalcap")

WORDS = ["the", "left", "right", "frontal", "lobe", "haemorrhage", "infarct", "no", "focal", "lesion", ".", ":"]
report = st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(" ".join)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(report, report), min_size=1, max_size=6))
def test_coco_bleu_and_rouge_equal_medm2gs_on_the_same_tokens(pairs):
    candidates, references = [c for c, _ in pairs], [r for _, r in pairs]
    coco = coco_caption_scores(candidates, references)
    ours = corpus_bleu(candidates, references)
    for n in range(1, 5):
        if ours[n] > 0:
            assert coco[f"coco_bleu_{n}"] == pytest.approx(ours[n], rel=1e-6), n
        else:  # no n-gram of some order matched: COCO's 1e-15 "tiny" count leaves a trace, medm2g says 0
            assert 0 <= coco[f"coco_bleu_{n}"] < 0.035, n  # (1e-6)^(1/4) at most
    assert coco["coco_rouge_l"] == pytest.approx(mean_rouge_l(candidates, references, beta=1.2), abs=1e-9)


def test_cider_rewards_the_words_that_tell_reports_apart():
    references = ["haemorrhage in the left frontal lobe .", "infarct in the right occipital lobe .",
                  "no focal lesion ."]
    exact = coco_caption_scores(references, references)
    swapped = coco_caption_scores(["haemorrhage in the right frontal lobe .", "infarct in the left occipital lobe .",
                                   "no focal lesion ."], references)
    assert set(exact) == set(COCO_METRICS)
    assert exact["coco_cider"] > swapped["coco_cider"] > 0 and exact["coco_bleu_4"] == pytest.approx(1.0)
    assert coco_caption_scores(["left"], ["no lesion ."])["coco_bleu_1"] < 1e-6
    assert coco_caption_scores([""], ["no lesion ."])["coco_cider"] == 0.0  # an empty report scores, not fails
    with pytest.raises(ValueError, match="one reference per candidate"):
        coco_caption_scores(["a"], [])
