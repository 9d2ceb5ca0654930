"""Word tokens of anatomy-pathology prompts, and where a prompt's terms sit among them.

Prompts use only vocabulary terms and grammar words (:mod:`medm2g.core.prompting.prompts`), so a
word-level tokenizer over exactly those words (and the instruction's) covers every prompt with no
subword pieces to align: one token is one word, and a term's tokens are its words. The word list
is stored with the trained model, so a vocabulary file edited later cannot shift the ids.
"""

from __future__ import annotations

import re
from typing import Sequence

import attrs

from medm2g.core.prompting.prompts import GRAMMAR_WORDS, Prompt
from medm2g.core.prompting.vocabulary import Vocabulary

SPECIALS = ("<pad>", "<bos>", "<sep>", "<image>", "<unk>")
PAD, BOS, SEP, IMAGE, UNKNOWN = range(len(SPECIALS))
SIDE_WORDS = frozenset({"left", "right", "bilateral"})


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z]+|;", text.lower())


@attrs.frozen
class PromptTokens:
    """``words`` after the specials; content words are the vocabulary's and the sides (the words the
    alignment matches with patches; "in", "the", ";" are not)."""

    words: tuple[str, ...]
    content: frozenset[str]

    @classmethod
    def for_vocabulary(cls, vocabulary: Vocabulary, instruction: str) -> "PromptTokens":
        content = frozenset(vocabulary.canonical_words()) | SIDE_WORDS
        words = sorted(content | GRAMMAR_WORDS | set(words_of(instruction)) | {";"})
        return cls(tuple(words), content)

    @property
    def size(self) -> int:
        return len(SPECIALS) + len(self.words)

    def ids(self, text: str) -> list[int]:
        index = {word: i + len(SPECIALS) for i, word in enumerate(self.words)}
        return [index.get(word, UNKNOWN) for word in words_of(text)]

    def content_ids(self) -> set[int]:
        return {i + len(SPECIALS) for i, word in enumerate(self.words) if word in self.content}

    def padded(self, texts: Sequence[str], length: int) -> tuple[list[list[int]], list[list[bool]]]:
        """Each text's ids cut or padded (with ``<pad>``) to ``length``, and where the real tokens are."""
        rows, masks = [], []
        for text in texts:
            ids = self.ids(text)[:length]
            rows.append(ids + [PAD] * (length - len(ids)))
            masks.append([True] * len(ids) + [False] * (length - len(ids)))
        return rows, masks


def prompt_terms(prompt: Prompt) -> list[str]:
    """The terms a heat map shows for a prompt: each stated pathology, and its side and anatomy as one
    term ("left frontal lobe"), in the prompt's order, once each."""
    terms = []
    for term in prompt.report.pathologies(negated=False):
        terms.append(term.canonical)
        if term.anatomy:
            terms.append(f"{term.side} {term.anatomy[0]}" if term.side else term.anatomy[0])
    return list(dict.fromkeys(terms))


def term_span(prompt_words: Sequence[str], term: str) -> tuple[int, int] | None:
    """[start, end) of ``term``'s words in ``prompt_words`` (first occurrence), or None."""
    wanted = words_of(term)
    for start in range(len(prompt_words) - len(wanted) + 1):
        if list(prompt_words[start:start + len(wanted)]) == wanted:
            return start, start + len(wanted)
    return None
