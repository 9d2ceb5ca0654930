"""Free report text onto a vocabulary: which terms it states, which it negates, on which side.

A report is cut into clauses (at sentence ends, semicolons and the contrast words "but",
"however", "although", "except"), so a negation or a side never reaches across them. In each
clause the longest vocabulary phrases are matched (``pulmonary oedema`` before ``oedema``).

- **Negation** (in the manner of NegEx): a pathology term is negated when a negation cue ("no",
  "not", "without", "absence of", "negative for", "free of", "no evidence of", "resolved") comes
  before it in its clause; "no haemorrhage" is not a haemorrhage.
- **Laterality**: an anatomy term takes the side word ("left", "right", "bilateral") nearest
  before it in its clause (``right frontal lobe``), else the clause's only side word; a
  pathology takes its clause's anatomy and side.
- **Unknown words**: content words of the report that are neither vocabulary phrases nor common
  report words (:data:`COMMON_WORDS`) are listed, so a user sees what the vocabulary missed.
"""

from __future__ import annotations

import re

import attrs

from medm2g.core.prompting.vocabulary import Vocabulary

NEGATION_CUES = ("no evidence of", "negative for", "absence of", "free of", "without", "resolved", "no", "not")
SIDES = {"left": "left", "right": "right", "bilateral": "bilateral", "both": "bilateral"}
CLAUSE_BREAK = re.compile(r"[.;:\n]|\b(?:but|however|although|except)\b", re.IGNORECASE)
WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
COMMON_WORDS = frozenset("""
a an the is are was were be been being there this that these those it its of in on at to from for with by and or as
seen identified noted present demonstrated shown visible measuring measures approximately about mm cm size sized
findings impression report comparison indication technique history exam examination study view views images image
normal abnormal unremarkable stable unchanged new old acute chronic subacute small large mild moderate severe minimal
focal diffuse likely possible probable suggestive consistent compatible concerning elsewhere intact preserved
suspected suspicious query questionable
differentiation also again otherwise there has have had appears appear appearance within region area lobe side
lesion no not without any evidence change changes since prior previous compared interval is clear well
""".split())


@attrs.frozen
class Term:
    """One vocabulary term found in a report."""

    kind: str  # anatomy or pathology
    canonical: str
    text: str  # as the report wrote it
    side: str | None = None
    negated: bool = False
    anatomy: tuple[str, ...] = ()  # for a pathology: the anatomy of its clause


@attrs.frozen
class NormalisedReport:
    terms: tuple[Term, ...]
    unknown: tuple[str, ...]

    def pathologies(self, negated: bool | None = None) -> list[Term]:
        return [t for t in self.terms if t.kind == "pathology" and (negated is None or t.negated == negated)]


def _matches(clause: str, phrases: dict[str, tuple[str, str]]) -> list[tuple[int, int, str, str, str]]:
    """(start, end, kind, canonical, text) of the longest phrases in ``clause``, left to right, no overlaps."""
    lowered = clause.lower()
    found = []
    for phrase in sorted(phrases, key=len, reverse=True):
        for match in re.finditer(rf"(?<![a-z-]){re.escape(phrase)}(?![a-z-])", lowered):
            if all(match.end() <= start or match.start() >= end for start, end, *_ in found):
                kind, canonical = phrases[phrase]
                found.append((match.start(), match.end(), kind, canonical, clause[match.start():match.end()]))
    return sorted(found)


def normalise(report: str, vocabulary: Vocabulary) -> NormalisedReport:
    phrases = vocabulary.phrases()
    terms: list[Term] = []
    unknown: list[str] = []
    for piece in CLAUSE_BREAK.split(report):
        clause = piece or ""
        matches = _matches(clause, phrases)
        lowered = clause.lower()
        sides = [(m.start(), SIDES[m.group(0)]) for m in re.finditer(r"\b(left|right|bilateral|both)\b", lowered)]
        cues = [m.start() for cue in NEGATION_CUES for m in re.finditer(rf"\b{re.escape(cue)}\b", lowered)]
        anatomy: list[Term] = []
        for start, end, kind, canonical, text in matches:
            if kind != "anatomy":
                continue
            before = [side for at, side in sides if at < start]
            side = before[-1] if before else (sides[0][1] if len({s for _, s in sides}) == 1 else None)
            anatomy.append(Term("anatomy", canonical, text, side))
        clause_side = next((t.side for t in anatomy if t.side), None)
        if clause_side is None and len({s for _, s in sides}) == 1:
            clause_side = sides[0][1]
        for start, end, kind, canonical, text in matches:
            if kind == "pathology":
                negated = any(cue < start for cue in cues)
                terms.append(Term("pathology", canonical, text, clause_side, negated,
                                  tuple(dict.fromkeys(t.canonical for t in anatomy))))
        terms.extend(anatomy)
        covered = [(start, end) for start, end, *_ in matches]
        for word in WORD.finditer(lowered):
            inside = any(start <= word.start() < end for start, end in covered)
            known = word.group(0) in COMMON_WORDS or word.group(0) in SIDES or len(word.group(0)) <= 2
            if not inside and not known:
                unknown.append(word.group(0))
    return NormalisedReport(tuple(terms), tuple(dict.fromkeys(unknown)))
