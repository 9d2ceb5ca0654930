"""A run's prompt writer: the vocabulary and writer its config names, each report written once.

Training reads the same reports at every step; a writer may be a language model. ``RunPrompts``
memoises each report's prompt, so a report costs one writing per process however often it is read.
"""

from __future__ import annotations

from medm2g.core.config.run_config import RunConfig
from medm2g.core.errors import ConfigError
from medm2g.core.prompting.generators import prompt_generator
from medm2g.core.prompting.prompts import Prompt, make_prompt
from medm2g.core.prompting.vocabulary import Vocabulary, installed_vocabularies


class RunPrompts:
    def __init__(self, vocabulary: Vocabulary, writer=None, name: str = "grammar"):
        self.vocabulary, self.writer, self.name = vocabulary, writer, name
        self._written: dict[str, Prompt] = {}

    @classmethod
    def for_config(cls, registry, config: RunConfig) -> "RunPrompts":
        """The vocabulary and writer of ``config.prompting``, or an error naming the installed ones."""
        vocabularies = installed_vocabularies(registry)
        name = config.prompting.vocabulary
        if name not in vocabularies:
            raise ConfigError(f"prompting.vocabulary: {name!r} is not an installed vocabulary "
                              f"(installed: {', '.join(sorted(vocabularies)) or 'none'})")
        writer, writer_name = prompt_generator(config.prompting.generator, registry)
        return cls(vocabularies[name], writer, writer_name)

    def prompt(self, report: str) -> Prompt:
        if report not in self._written:
            self._written[report] = make_prompt(report, self.vocabulary, self.writer, self.name)
        return self._written[report]

    def texts(self, reports) -> list[str]:
        return [self.prompt(str(report)).text for report in reports]


def read_prompts_instead_of_reports(encoder, prompts: RunPrompts):
    """Make a report encoder read each report's prompt (a forward pre-hook: the encoder's weights and
    their names are unchanged, so its checkpoints load either way); returns the hook's handle."""

    def rewrite(module, args):
        return (prompts.texts(args[0]), *args[1:])

    return encoder.register_forward_pre_hook(rewrite)
