"""BLEU-1..4, ROUGE-L and CIDEr-D as the COCO caption evaluation computes them (``pycocoevalcap``).

Report-generation papers (R2Gen, MedM2G's table 3 and the like) publish the numbers of this
package, so medm2g prints them beside its own: the same number means the same thing. The
package is optional (``pip install 'medm2g[metrics]'``, part of ``[test]``): it ships Java jars
for METEOR and SPICE that medm2g never runs. Reports are tokenised by medm2g's own tokenizer
(lowercase words and single punctuation marks) and joined by spaces, instead of COCO's PTB
tokenizer, which needs Java; report-generation code bases do the same. On those tokens COCO's
BLEU equals medm2g's corpus BLEU (except where the reports hold no n-gram of an order at all:
COCO's smoothing then counts that order's precision as 1e-6 and reports up to 0.03 where medm2g
reports 0), and COCO's ROUGE-L is medm2g's
LCS F-score with beta 1.2 (its own default is F1): the tests hold both to that. CIDEr-D has no medm2g counterpart: its
document frequencies come from the references scored, so compare CIDEr only on the same set.
"""

from __future__ import annotations

from typing import Sequence

from medm2g.core.metrics.text import tokens

COCO_METRICS = ("coco_bleu_1", "coco_bleu_2", "coco_bleu_3", "coco_bleu_4", "coco_rouge_l", "coco_cider")
INSTALL_HINT = "pip install 'medm2g[metrics]' (pycocoevalcap)"


def coco_available() -> bool:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return False
    return True


def coco_caption_scores(candidates: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """{coco_bleu_1..4, coco_rouge_l, coco_cider} of ``candidates`` against one reference each;
    ImportError naming the extra when pycocoevalcap is not installed."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        raise ImportError(f"the COCO caption metrics need pycocoevalcap: {INSTALL_HINT}") from None
    if len(candidates) != len(references) or not candidates:
        raise ValueError(f"need one reference per candidate and at least one pair, got {len(candidates)} "
                         f"candidates and {len(references)} references")
    # a report that tokenises to nothing would make BLEU's length ratio divide by zero: score it as "."
    res = {i: [" ".join(tokens(text)) or "."] for i, text in enumerate(candidates)}
    gts = {i: [" ".join(tokens(text)) or "."] for i, text in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {**{f"coco_bleu_{n}": float(bleu[n - 1]) for n in range(1, 5)}, "coco_rouge_l": float(rouge),
            "coco_cider": float(cider)}
