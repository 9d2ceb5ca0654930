"""One exception hierarchy for everything a user can get wrong.

The CLI turns any :class:`MedM2GError` into one line on stderr and a non-zero
exit; anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


class MedM2GError(Exception):
    """Base of every error caused by input, configuration or installed plugins."""


class GraphError(MedM2GError):
    """A pair graph is malformed or cannot be planned (unknown modality, disconnected modality...)."""


class PluginError(MedM2GError):
    """A modality plugin is broken: missing or misspelled hook, bad spec, duplicate name."""


class DataError(MedM2GError):
    """A data file cannot be used: it names the file and the reason."""


class CheckpointError(MedM2GError):
    """A checkpoint is missing, incomplete or does not match the model it is loaded into."""


class ConfigError(MedM2GError):
    """A run config file, preset or command-line override is malformed."""


class DivergenceError(MedM2GError):
    """Training diverged: a stage's loss or gradients stopped being finite numbers (names the stage and the step)."""
