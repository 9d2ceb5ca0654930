"""Descriptive prompts that use only a vocabulary's terms, written by a grammar or by a plugged model.

The default writer is deterministic and offline: each stated pathology becomes
"<pathology> in the <side> <anatomy>" (or "<pathology>" where the report names no anatomy for it),
("<side> <pathology>" with a side but no anatomy), stated findings first, then "no <pathology>"
for each negated one; a report stating none is "normal <anatomy>" for the first anatomy it
names, else "normal". Every
content word of a prompt is then checked against the vocabulary's canonical terms and the
grammar's own words (:data:`GRAMMAR_WORDS`): a prompt from a plugged generator (any callable, a
local language model, say) that uses another word is refused with the words named, never passed on.
"""

from __future__ import annotations

import re
from typing import Callable

import attrs

from medm2g.core.errors import DataError
from medm2g.core.prompting.normaliser import NormalisedReport, Term, normalise
from medm2g.core.prompting.vocabulary import Vocabulary

GRAMMAR_WORDS = frozenset({"in", "the", "of", "and", "with", "no", "normal", "left", "right", "bilateral"})
"""Words a prompt may use beside the vocabulary's canonical terms."""

PromptGenerator = Callable[[str, Vocabulary], str]
"""(report, vocabulary) -> prompt: a user's own writer, whose prompts are checked like the grammar's."""


@attrs.frozen
class Prompt:
    text: str
    report: NormalisedReport
    writer: str  # "grammar", or the plugged generator's name


def _where(term: Term) -> str:
    if not term.anatomy:
        return f"{term.side} {term.canonical}" if term.side else term.canonical
    place = f"{term.side} {term.anatomy[0]}" if term.side else term.anatomy[0]
    return f"{term.canonical} in the {place}"


def grammar_prompt(report: NormalisedReport) -> str:
    """The deterministic prompt of a normalised report (see the module's docstring)."""
    stated = list(dict.fromkeys(_where(t) for t in report.pathologies(negated=False)))
    denied = list(dict.fromkeys(f"no {t.canonical}" for t in report.pathologies(negated=True)
                                if t.canonical not in {s.canonical for s in report.pathologies(negated=False)}))
    if not stated:
        anatomy = next((t for t in report.terms if t.kind == "anatomy"), None)
        stated = [f"normal {anatomy.canonical}" if anatomy is not None else "normal"]
    return "; ".join(stated + denied)


def outside_words(prompt: str, vocabulary: Vocabulary) -> list[str]:
    """The words of ``prompt`` that are neither vocabulary terms' words nor grammar words."""
    allowed = vocabulary.canonical_words() | GRAMMAR_WORDS
    return list(dict.fromkeys(word for word in re.findall(r"[a-z]+", prompt.lower()) if word not in allowed))


def make_prompt(report: str, vocabulary: Vocabulary, generator: PromptGenerator | None = None,
                name: str = "grammar") -> Prompt:
    """The prompt of ``report``: by the grammar, or by ``generator`` and then checked; a prompt with a word
    outside the vocabulary is a :class:`DataError` naming those words."""
    normalised = normalise(report, vocabulary)
    text = grammar_prompt(normalised) if generator is None else str(generator(report, vocabulary)).strip()
    if not re.search(r"[a-z]", text.lower()):
        raise DataError(f"prompt by {name} refused: it wrote no words (the report was {report[:80]!r})")
    outside = outside_words(text, vocabulary)
    if outside:
        raise DataError(f"prompt by {name} refused: {', '.join(repr(w) for w in outside)} "
                        f"{'is' if len(outside) == 1 else 'are'} not in the {vocabulary.name} vocabulary "
                        f"({vocabulary.source}); the prompt was {text!r}")
    return Prompt(text, normalised, name)
