"""The offline tokenizer must know the shipped vocabulary (transformers 5 once silently dropped it)."""

import pytest

from medm2g.core.errors import CheckpointError
from medm2g.plugins.text.models.tokenizer import load_tokenizer
from medm2g.plugins.text.plugin import default_tokenizer


def test_the_default_tokenizer_has_the_whole_shipped_vocabulary():
    tokenizer = default_tokenizer()
    import importlib.resources

    lines = importlib.resources.files("medm2g.plugins.text").joinpath("vocabulary.txt").read_text().split()
    assert len(tokenizer) == len(lines) > 300


def test_report_words_are_words_not_unknowns():
    tokenizer = default_tokenizer()
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("Right occipital infarct, 21 mm.")["input_ids"])
    assert tokens == ["[CLS]", "right", "occipital", "infarct", ",", "2", "##1", "mm", ".", "[SEP]"]
    assert tokenizer.decode(tokenizer("left frontal mass")["input_ids"], skip_special_tokens=True) == "left frontal mass"


def test_an_unseen_word_falls_back_to_characters():
    tokenizer = default_tokenizer()
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("zyx")["input_ids"])[1:-1]
    assert "[UNK]" not in tokens and "".join(t.removeprefix("##") for t in tokens) == "zyx"


def test_padding_uses_the_pad_token_and_a_mask():
    batch = default_tokenizer()(["a", "a b c"], padding=True)
    assert batch["input_ids"][0][-1] == default_tokenizer().pad_token_id
    assert batch["attention_mask"] == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_a_vocabulary_without_special_tokens_is_refused(tmp_path):
    vocabulary = tmp_path / "vocab.txt"
    vocabulary.write_text("a\nb\n")
    with pytest.raises(CheckpointError, match=r"vocab.txt: vocabulary lacks the special tokens \[PAD\]"):
        load_tokenizer(vocabulary)


RADIOLOGY_WORDS = ("bleed", "haematoma", "hematoma", "stroke", "hemisphere", "neoplasm", "subdural", "extradural",
                   "contusion", "oedema", "edema", "haemorrhage", "hemorrhage", "hydrocephalus", "herniation",
                   "glioblastoma", "meningioma", "metastases", "ischaemic", "ischemic", "lacunar", "sulci",
                   "pneumothorax", "consolidation", "atelectasis", "cardiomegaly", "effusion", "emphysema")


def test_common_radiology_words_stay_whole_in_either_spelling():
    tokenizer = default_tokenizer()
    for word in RADIOLOGY_WORDS:
        assert tokenizer.tokenize(word) == [word], word


def test_a_report_in_other_words_is_words_and_suffixes_not_spelling():
    tokenizer = default_tokenizer()
    report = "Acute left-sided bleed in the occipital region with surrounding oedema; strokes and hematomas favored."
    tokens = tokenizer.tokenize(report)
    assert tokens[:5] == ["acute", "left", "-", "sided", "bleed"]
    spelled = [t for t in tokens if len(t.removeprefix("##")) == 1 and t.isalpha()]
    assert spelled == []  # every word whole or a stem with a suffix
    assert len(tokens) <= 24
