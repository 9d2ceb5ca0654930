"""Anatomy-pathology prompting: the vocabularies, the negation-aware normaliser and vocabulary-only prompts."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from medm2g.core.errors import DataError
from medm2g.core.phantom.anatomy import LESION_TYPES, REGIONS, SIDES, Finding
from medm2g.core.prompting.normaliser import normalise
from medm2g.core.prompting.prompts import make_prompt, outside_words
from medm2g.core.prompting.vocabulary import load_vocabulary, vocabulary_from_mapping

VOCABULARIES = Path(__file__).parents[3] / "plugins" / "text" / "vocabularies"


@pytest.fixture(scope="module")
def head():
    return load_vocabulary(VOCABULARIES / "head.yaml")


@pytest.fixture(scope="module")
def chest():
    return load_vocabulary(VOCABULARIES / "chest.yaml")


def _stated(report, vocabulary):
    found = normalise(report, vocabulary)
    return {(t.canonical, t.side, t.anatomy[:1], t.negated) for t in found.pathologies()}


def test_negations_synonyms_and_laterality(head):
    assert _stated("No haemorrhage. There is an infarct in the right occipital lobe.", head) == {
        ("haemorrhage", None, (), True), ("infarct", "right", ("occipital lobe",), False)}
    assert _stated("Left frontal hematoma but no midline shift.", head) == {
        ("haemorrhage", "left", ("frontal lobe",), False), ("midline shift", None, (), True)}
    denied = normalise("No evidence of haemorrhage, infarct or mass.", head).pathologies()
    assert len(denied) == 3 and {t.negated for t in denied} == {True}
    assert _stated("Hemorrhage in the right parietal region; the left temporal lobe is normal.", head) == {
        ("haemorrhage", "right", ("parietal lobe",), False)}
    unknown = normalise("There is a glioblastoma with surrounding edema in the right temporal lobe.", head).unknown
    assert unknown == ("glioblastoma", "surrounding")


def test_every_phantom_report_normalises_to_its_truth_and_prompts_in_vocabulary_terms(head):
    from medm2g.plugins.text.phantom import report

    generator = torch.Generator().manual_seed(0)
    named = {"haemorrhage": "haemorrhage", "infarct": "infarct", "tumour": "mass", "calcification": "calcification"}
    for kind, side, region in itertools.product(LESION_TYPES, SIDES, REGIONS):
        text = report(Finding(kind, side, region, 24.0), generator)
        stated = normalise(text, head).pathologies(negated=False)
        assert {(t.canonical, t.side, t.anatomy[0]) for t in stated} == {(named[kind], side, f"{region} lobe")}, text
        prompt = make_prompt(text, head)
        first, *others = prompt.text.split("; ")
        assert first == f"{named[kind]} in the {side} {region} lobe" and not outside_words(prompt.text, head)
        assert all(other in ("no midline shift", "no haemorrhage", "no infarct", "no mass") for other in others), text
    normal = make_prompt(report(Finding("normal"), generator), head).text
    assert normal.startswith("normal") and not outside_words(normal, head)


def test_a_chest_report_and_a_plugged_generator_that_strays_is_refused(chest):
    prompt = make_prompt("Small right pleural effusion. No pneumothorax. Mild pulmonary edema.", chest)
    assert prompt.text == "right pleural effusion; pulmonary oedema; no pneumothorax"
    assert make_prompt("x", chest, lambda report, vocabulary: "bilateral pleural effusion", "mine").writer == "mine"
    with pytest.raises(DataError, match=r"prompt by llm refused: 'large', 'glioma' are not in the chest vocabulary"):
        make_prompt("x", chest, lambda report, vocabulary: "large glioma in the lung", "llm")


def test_a_broken_vocabulary_file_names_the_field(tmp_path):
    with pytest.raises(DataError, match=r"pathology.bleed: 'haemorrhage' is already a term of pathology.haemorrhage"):
        vocabulary_from_mapping({"name": "v", "pathology": {"haemorrhage": [], "bleed": ["haemorrhage"]}}, "v.yaml")
    with pytest.raises(DataError, match=r"v.yaml: unknown field 'pathologies'"):
        vocabulary_from_mapping({"name": "v", "pathologies": {}}, "v.yaml")
    (tmp_path / "bad.yaml").write_text("name: [")
    with pytest.raises(DataError, match=r"bad.yaml: not valid YAML"):
        load_vocabulary(tmp_path / "bad.yaml")


def test_the_text_plugin_declares_its_vocabularies_and_medm2g_prompt_prints_the_terms(installed, capsys):
    from medm2g.core.apps.cli import main
    from medm2g.core.prompting.vocabulary import installed_vocabularies

    assert list(installed_vocabularies(installed)) == ["head", "chest"]
    assert installed["ct"].vocabularies() == []  # optional: the imaging plugins declare none
    assert main(["prompt", "Left parietal bleed. No hydrocephalus. A glioblastoma is suspected."]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "haemorrhage in the left parietal lobe; no hydrocephalus"
    assert "  pathology 'hydrocephalus' (negated) from 'hydrocephalus'" in out
    assert out[-1] == "  words the head vocabulary does not know: glioblastoma"
    assert main(["prompt", "x", "--vocabulary", "abdomen"]) == 1
    assert "--vocabulary 'abdomen': installed vocabularies: head, chest" in capsys.readouterr().err
