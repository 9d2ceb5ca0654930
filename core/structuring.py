"""Strict YAML-to-attrs structuring shared by every file a person writes (pair graphs, run configs).

One place decides how cattrs is made strict (unknown keys are errors, a string is
not silently a bool) and how its nested exceptions become one line per problem,
``field.path: what was expected``.
"""

from __future__ import annotations

from typing import Any, Callable

import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError


def keep_message(exc: BaseException, type_: Any) -> str:
    """cattrs' default formatter replaces validator messages with generic ones; keep them."""
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"unknown key(s) {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, (ValueError, TypeError)) and str(exc):
        if "invalid literal" in str(exc) or "could not convert" in str(exc):
            return f"expected {getattr(type_, '__name__', type_)}, got an incompatible value"
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def strict_converter() -> cattrs.Converter:
    """A converter that forbids unknown keys and refuses to coerce numbers or strings into str or bool."""
    converter = cattrs.Converter(forbid_extra_keys=True)

    def strict_str(value: Any, _type: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type(value).__name__} {value!r}")
        return value

    def strict_bool(value: Any, _type: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value

    converter.register_structure_hook(str, strict_str)
    converter.register_structure_hook(bool, strict_bool)
    return converter


def yaml_path(cattrs_path: str) -> str:
    """'$.pairs[2].b' -> 'pairs[2].b'."""
    return cattrs_path.removeprefix("$").removeprefix(".") or "(top level)"


def structure_or_explain(converter: cattrs.Converter, data: Any, cls: type, source: str,
                         error: Callable[[str], Exception]) -> Any:
    """``converter.structure(data, cls)``, or ``error("source: path: problem; ...")`` listing every problem."""
    try:
        return converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError) as failure:
        problems = []
        for line in cattrs.transform_error(failure, path="$", format_exception=keep_message):
            message, _, where = line.rpartition(" @ ")
            problems.append(f"{yaml_path(where)}: {message}")
        raise error(f"{source}: " + "; ".join(problems)) from None


def positive(instance, attribute, value) -> None:
    """attrs validator: the field must be above zero."""
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def non_negative(instance, attribute, value) -> None:
    """attrs validator: the field must be zero or above."""
    if value < 0:
        raise ValueError(f"{attribute.name} must be zero or positive, got {value}")


def one_of(choices: tuple[str, ...]):
    """attrs validator: the field must be one of ``choices`` (a message a reader can act on, unlike
    attrs' ``in_``, whose error carries the whole attribute)."""

    def validate(instance, attribute, value) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}, got {value!r}")

    return validate
