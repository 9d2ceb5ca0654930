"""Prompt writers besides the grammar: a plugin's, by name, and a local language model's folder;
whatever writes, a prompt with a word outside the vocabulary is refused with the word named."""

import importlib.util
from pathlib import Path

import pytest
import torch

from medm2g.core.apps.cli import main
from medm2g.core.errors import ConfigError, DataError, PluginError
from medm2g.core.prompting.generators import LocalLanguageModel, installed_prompt_generators, prompt_generator
from medm2g.core.prompting.prompts import make_prompt
from medm2g.core.prompting.vocabulary import installed_vocabularies
from medm2g.registry import hookimpl, load_modalities

EXAMPLE = Path(__file__).parents[3] / "examples" / "make_tiny_pretrained.py"
REPORT = "Findings: acute bleed in the left temporal lobe."


class Writers:
    @hookimpl
    def medm2g_prompt_generators(self):
        return {"terse": lambda report, vocabulary: "haemorrhage in the left temporal lobe",
                "chatty": lambda report, vocabulary: "a worrying haemorrhage, call the surgeons"}


@pytest.fixture(scope="module")
def registry():
    return load_modalities([Writers()])


@pytest.fixture(scope="module")
def head(installed):
    return installed_vocabularies(installed)["head"]


@pytest.fixture(scope="module")
def language_model(tmp_path_factory):
    """A tiny random GPT-2 with a byte-level BPE tokenizer, saved as a local folder (safetensors)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    spec = importlib.util.spec_from_file_location("make_tiny_pretrained", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    tokenizer = example.gpt2_style_tokenizer()
    folder = tmp_path_factory.mktemp("tiny-llm")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=32, n_layer=1, n_head=2,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
                    ).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_registered_writer_is_used_by_name_and_checked(registry, head):
    writer, name = prompt_generator("terse", registry)
    prompt = make_prompt(REPORT, head, writer, name)
    assert prompt.text == "haemorrhage in the left temporal lobe" and prompt.writer == "terse"
    writer, name = prompt_generator("chatty", registry)
    with pytest.raises(DataError, match=r"prompt by chatty refused: 'a', 'worrying', 'call', 'surgeons' are not "
                                        r"in the head vocabulary"):
        make_prompt(REPORT, head, writer, name)


def test_the_grammar_is_the_default_and_an_unknown_writer_names_the_choices(registry):
    assert prompt_generator(None, registry) == (None, "grammar")
    assert prompt_generator("grammar", registry) == (None, "grammar")
    with pytest.raises(DataError, match=r"prompt writer 'gpt-4': neither a registered writer "
                                        r"\(grammar, terse, chatty\) nor a folder holding a language model"):
        prompt_generator("gpt-4", registry)


def test_two_writers_of_one_name_are_an_error(registry):
    class Again:
        @hookimpl
        def medm2g_prompt_generators(self):
            return {"terse": lambda report, vocabulary: ""}

    with pytest.raises(PluginError, match="two prompt writers are named 'terse'"):
        installed_prompt_generators(load_modalities([Writers(), Again()]))


def test_a_local_language_model_writes_and_its_outside_words_are_refused(language_model, head, installed):
    writer, name = prompt_generator(str(language_model), installed)
    assert isinstance(writer, LocalLanguageModel) and name == language_model.name
    assert "Use only these terms: atrophy, basal ganglia," in writer.instruction(REPORT, head)
    written = writer(REPORT, head)
    assert written == writer(REPORT, head)  # greedy: one report, one prompt
    # a random model writes byte soup (or nothing), never the vocabulary's words alone: refused, never passed on
    with pytest.raises(DataError, match=rf"prompt by {name} refused: "):
        make_prompt(REPORT, head, writer, name)


def test_a_writer_that_writes_no_words_is_refused(head):
    with pytest.raises(DataError, match=r"prompt by silent refused: it wrote no words"):
        make_prompt(REPORT, head, lambda report, vocabulary: " ; ", "silent")


def test_a_folder_without_a_model_is_refused_naming_it(tmp_path, installed):
    with pytest.raises(ConfigError, match=rf"{tmp_path}: not a language model folder \(no config.json\)"):
        prompt_generator(str(tmp_path), installed)


def test_medm2g_prompt_takes_a_generator(language_model, capsys):
    assert main(["prompt", REPORT, "--generator", "grammar"]) == 0
    assert capsys.readouterr().out.startswith("haemorrhage in the left temporal lobe\n")
    assert main(["prompt", REPORT, "--generator", str(language_model)]) != 0
    assert "refused" in capsys.readouterr().err
