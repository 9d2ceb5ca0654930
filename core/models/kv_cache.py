"""One decoding step of a transformers causal LM with its key-value cache, across transformers versions.

transformers 5 renamed the cache argument and output from ``past_key_values`` to ``cache`` (the
old name warns, then goes); medm2g's requirement allows both majors, so the name is read from the
model's own signature once.
"""

from __future__ import annotations

import functools
import inspect


@functools.lru_cache(maxsize=None)
def _cache_name(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def step_with_cache(model, cache, **inputs):
    """``model(**inputs)`` continuing from ``cache`` (None at the first step); returns (output, next cache)."""
    name = _cache_name(type(model))
    output = model(**inputs, **{name: cache}, use_cache=True)
    return output, getattr(output, name)
