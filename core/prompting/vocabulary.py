"""Anatomy and pathology vocabularies: canonical terms with their synonyms, shipped as data files.

A vocabulary file (YAML) has a ``name``, a ``description`` and two mappings, ``anatomy`` and
``pathology``, from each canonical term to a list of synonyms. Matching ignores case; a phrase
maps to one canonical term only (a synonym listed under two terms is an error naming both).
Modality plugins ship them and declare them through the ``medm2g_vocabularies`` hook; the text
plugin's head vocabulary covers the phantom cohort's reports, its chest vocabulary MIMIC-CXR's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import attrs

from medm2g.core.errors import DataError

KINDS = ("anatomy", "pathology")


@attrs.frozen
class Vocabulary:
    name: str
    description: str
    terms: Mapping[str, Mapping[str, tuple[str, ...]]]  # kind -> canonical -> synonyms
    source: str = "<memory>"

    def phrases(self) -> dict[str, tuple[str, str]]:
        """Every phrase (canonical or synonym, lowercase) -> (kind, canonical)."""
        found: dict[str, tuple[str, str]] = {}
        for kind in KINDS:
            for canonical, synonyms in self.terms.get(kind, {}).items():
                for phrase in (canonical, *synonyms):
                    found[" ".join(phrase.lower().split())] = (kind, canonical)
        return found

    def canonical_words(self) -> set[str]:
        """The words of every canonical term: what a prompt may use beside its grammar."""
        return {word for kind in KINDS for canonical in self.terms.get(kind, {})
                for word in re.findall(r"[a-z]+", canonical.lower())}

    def canonical(self, kind: str) -> tuple[str, ...]:
        return tuple(self.terms.get(kind, {}))


def vocabulary_from_mapping(data, source: str) -> Vocabulary:
    """A :class:`Vocabulary` from parsed YAML; every problem is one line naming the file and the field."""
    if not isinstance(data, Mapping):
        raise DataError(f"{source}: expected a mapping with name, anatomy and pathology, got {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "description", *KINDS})
    if unknown:
        raise DataError(f"{source}: unknown field {unknown[0]!r} (fields: name, description, anatomy, pathology)")
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise DataError(f"{source}: name: expected a lowercase identifier, got {name!r}")
    terms: dict[str, dict[str, tuple[str, ...]]] = {}
    owner: dict[str, str] = {}
    for kind in KINDS:
        entries = data.get(kind) or {}
        if not isinstance(entries, Mapping):
            raise DataError(f"{source}: {kind}: expected a mapping of term -> [synonyms]")
        terms[kind] = {}
        for canonical, synonyms in entries.items():
            synonyms = synonyms or []
            if not isinstance(canonical, str) or not isinstance(synonyms, list) or not all(
                    isinstance(s, str) and s.strip() for s in synonyms):
                raise DataError(f"{source}: {kind}.{canonical}: expected a list of synonym strings, got {synonyms!r}")
            for phrase in dict.fromkeys((canonical, *synonyms)):
                key = " ".join(phrase.lower().split())
                if key in owner and owner[key] != f"{kind}.{canonical}":
                    raise DataError(f"{source}: {kind}.{canonical}: {phrase!r} is already a term of {owner[key]}")
                owner[key] = f"{kind}.{canonical}"
            terms[kind][canonical] = tuple(s for s in dict.fromkeys(synonyms) if s.lower() != canonical.lower())
    if not terms["pathology"]:
        raise DataError(f"{source}: pathology: a vocabulary needs at least one pathology term")
    return Vocabulary(name, str(data.get("description", "")), terms, source)


def load_vocabulary(path: Path | str) -> Vocabulary:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: vocabulary file not found") from None
    except yaml.YAMLError as error:
        raise DataError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    return vocabulary_from_mapping(data, str(path))


def installed_vocabularies(registry) -> dict[str, Vocabulary]:
    """Every vocabulary the installed modality plugins declare (``medm2g_vocabularies``), by name;
    two of one name are an error naming both files."""
    found: dict[str, Vocabulary] = {}
    for modality in registry.values():
        for path in modality.vocabularies():
            vocabulary = load_vocabulary(path)
            if vocabulary.name in found:
                raise DataError(f"two vocabularies are named {vocabulary.name!r}: {found[vocabulary.name].source} "
                                f"and {vocabulary.source}")
            found[vocabulary.name] = vocabulary
    return found
