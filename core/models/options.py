"""Apply a run config's model options to a model config, with errors that name the option."""

from __future__ import annotations

import difflib
from typing import Any, Mapping, TypeVar

import attrs

from medm2g.core.errors import PluginError

C = TypeVar("C")


def apply_options(config: C, options: Mapping[str, Any], where: str) -> C:
    """``attrs.evolve(config, **options)``, refusing options the config does not have.

    ``where`` names the place in the run config (``models.xray.prompt_encoder``) so the
    user sees which line to fix; a near miss gets a suggestion.
    """
    known = [field.name for field in attrs.fields(type(config))]
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PluginError(f"{where}: unknown option {name!r}{hint}; known: {', '.join(known)}")
    try:
        return attrs.evolve(config, **options)
    except (TypeError, ValueError) as error:
        raise PluginError(f"{where}: {error}") from None
