"""Prompt writers besides the grammar: those plugins register, and a local language model.

The seed paper writes its anatomy-pathology prompts with GPT-4; medm2g's default is the offline
grammar of :mod:`.prompts`. A plugin may register its own writers by name
(``medm2g_prompt_generators``), and a folder holding a Hugging Face causal language model (a
fine-tuned GPT-2, a local Llama) is a writer too: it is asked to rewrite the report with the
vocabulary's terms only. Whatever writes, :func:`medm2g.core.prompting.prompts.make_prompt` checks
the prompt afterwards and refuses one with a word outside the vocabulary.
"""

from __future__ import annotations

from pathlib import Path

from medm2g.core.errors import ConfigError, DataError, PluginError
from medm2g.core.prompting.prompts import GRAMMAR_WORDS, PromptGenerator
from medm2g.core.prompting.vocabulary import Vocabulary

GRAMMAR = "grammar"
"""The name of the built-in deterministic writer."""


class LocalLanguageModel:
    """A causal language model in a local folder (``config.json``, safetensors weights, its
    tokenizer), loaded once, nothing downloaded; greedy decoding, so one report gives one prompt."""

    def __init__(self, folder: Path | str, max_new_tokens: int = 48):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.folder = Path(folder)
        if not (self.folder / "config.json").is_file():
            raise ConfigError(f"{self.folder}: not a language model folder (no config.json)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(self.folder, local_files_only=True,
                                                              use_safetensors=True).eval()
        except (OSError, ValueError) as error:
            raise ConfigError(f"{self.folder}: could not load a causal language model with its tokenizer "
                              f"({str(error).splitlines()[0][:200]})") from None
        self.max_new_tokens = max_new_tokens

    def instruction(self, report: str, vocabulary: Vocabulary) -> str:
        terms = ", ".join(sorted(vocabulary.canonical("anatomy") + vocabulary.canonical("pathology")))
        return (f"Rewrite the radiology report as a short descriptive prompt. Use only these terms: {terms}; "
                f"and only these words besides them: {', '.join(sorted(GRAMMAR_WORDS))}.\n"
                f"Report: {report.strip()}\nPrompt:")

    def __call__(self, report: str, vocabulary: Vocabulary) -> str:
        import torch

        inputs = self.tokenizer(self.instruction(report, vocabulary), return_tensors="pt")
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        written = self.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return written.strip().splitlines()[0] if written.strip() else ""


def installed_prompt_generators(registry) -> dict[str, PromptGenerator]:
    """Every writer the installed plugins register (``medm2g_prompt_generators``), by name; two of one
    name, or one named ``grammar``, are an error."""
    found: dict[str, PromptGenerator] = {}
    for registered in registry.manager.hook.medm2g_prompt_generators():
        for name, writer in (registered or {}).items():
            if name == GRAMMAR or name in found:
                raise PluginError(f"two prompt writers are named {name!r} (the built-in one is {GRAMMAR!r}); "
                                  f"rename one in its plugin's medm2g_prompt_generators")
            if not callable(writer):
                raise PluginError(f"prompt writer {name!r}: expected a callable (report, vocabulary) -> prompt, "
                                  f"got {type(writer).__name__}")
            found[name] = writer
    return found


def prompt_generator(choice: str | None, registry) -> tuple[PromptGenerator | None, str]:
    """(writer, its name) for ``choice``: ``grammar`` (or nothing) is the built-in (None), a registered
    name is that plugin's writer, a folder is a :class:`LocalLanguageModel`; anything else is an error
    naming the choices."""
    if choice in (None, "", GRAMMAR):
        return None, GRAMMAR
    installed = installed_prompt_generators(registry)
    if choice in installed:
        return installed[choice], choice
    if Path(choice).is_dir():
        return LocalLanguageModel(choice), Path(choice).name
    raise DataError(f"prompt writer {choice!r}: neither a registered writer ({', '.join([GRAMMAR, *installed])}) "
                    f"nor a folder holding a language model")
