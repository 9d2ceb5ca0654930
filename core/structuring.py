"""Strict YAML-to-attrs structuring shared by every file a person writes (pair graphs, run configs).

One place decides how YAML is read (bounded: :func:`read_yaml`), how cattrs is made strict
(unknown keys are errors, a string is not silently a bool, a number is finite) and how its
nested exceptions become one line per problem, ``field.path: what was expected``.

Every message about a malformed file is one line of bounded length, quickly: a value is
echoed as a short prefix (:func:`shown`), control characters are escaped, at most
:data:`MAX_PROBLEMS` problems are listed, and YAML is refused past :data:`MAX_YAML_BYTES`,
:data:`MAX_YAML_DEPTH` levels of nesting or :data:`MAX_YAML_VALUES` values once aliases
are expanded (a 468-byte alias bomb otherwise expands to hundreds of megabytes).
"""

from __future__ import annotations

import math
import re
import reprlib
from pathlib import Path
from typing import Any, Callable, Iterable

import cattrs
import yaml
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

MAX_YAML_BYTES = 1 << 20
"""A pair graph or run config is at most 1 MiB (the shipped ones are under 2 kB)."""

MAX_YAML_DEPTH = 64
"""Collections nested deeper than this are refused (deeper ones overflowed Python's stack)."""

MAX_YAML_VALUES = 10_000
"""Values (scalars and collections) a YAML document may hold once its aliases are expanded."""

ECHO_LENGTH = 60
"""Characters of a value a message echoes."""

MAX_PROBLEMS = 10
"""Problems one message lists; the rest are counted."""

MAX_PROBLEM_LENGTH = 300
"""Characters of one listed problem."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = ECHO_LENGTH
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxlevel = 3


def one_line(text: str, limit: int = MAX_PROBLEM_LENGTH) -> str:
    """``text`` on one line (control characters escaped) and cut to ``limit`` characters."""
    text = _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: Any, limit: int = ECHO_LENGTH) -> str:
    """A value as a message echoes it: its repr, on one line, at most ``limit`` characters, found in
    bounded time however large or deep the value is."""
    return one_line(_REPR.repr(value), limit)


def explain(source: str, problems: Iterable[str]) -> str:
    """``source: problem; problem; ...``: at most :data:`MAX_PROBLEMS`, each one bounded line."""
    problems = list(problems)
    listed = "; ".join(one_line(p) for p in problems[:MAX_PROBLEMS])
    more = f"; ... {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
    return f"{one_line(source, 1000)}: {listed}{more}"


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting past :data:`MAX_YAML_DEPTH`, more than
    :data:`MAX_YAML_VALUES` values after alias expansion (an alias bomb), and recursive aliases.
    The expanded size is counted node by node as the document is composed, so a bomb is
    refused after reading its few hundred bytes, before anything is expanded."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._values: dict[int, int] = {}  # id(node) -> values it holds, aliases expanded

    def compose_node(self, parent, index):
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        if not alias:
            self._depth += 1
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            if not alias:
                self._depth -= 1
        if alias:
            if id(node) not in self._values:
                raise yaml.composer.ComposerError(None, None, "an alias inside the value it names (recursive)", mark)
            return node
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        values = 1 + sum(self._values[id(child)] for child in children)
        if values > MAX_YAML_VALUES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_YAML_VALUES} values once its aliases are expanded", mark)
        self._values[id(node)] = values
        return node


def _yaml_problem(error: yaml.YAMLError, text: str) -> str:
    if isinstance(error, yaml.reader.ReaderError):  # a control character; PyYAML's message takes two lines
        line = text.count("\n", 0, error.position) + 1
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        return f"line {line}, column {column}: character U+{error.character:04X} is not allowed in YAML"
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + (getattr(error, "problem", None) or str(error))


def read_yaml(path: Path, what: str, error: Callable[[str], Exception]) -> Any:
    """The YAML document at ``path`` (a ``what``: "pair graph", "run config"), or ``error`` with one
    line naming the file and the place: unreadable, too large, not UTF-8, malformed, too deep or
    too many values (see :class:`BoundedLoader`)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
    except OSError as failure:
        raise error(f"{one_line(str(path), 1000)}: cannot read {what}: {failure.strerror or failure}") from None
    if len(data) > MAX_YAML_BYTES:
        raise error(f"{one_line(str(path), 1000)}: larger than {MAX_YAML_BYTES // 2**20} MiB: not a {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as failure:
        line = data.count(b"\n", 0, failure.start) + 1
        raise error(f"{one_line(str(path), 1000)}: not UTF-8 text: {failure.reason} at line {line} "
                    f"(byte {failure.start})") from None
    try:
        return yaml.load(text, Loader=BoundedLoader)
    except yaml.YAMLError as failure:
        raise error(f"{one_line(str(path), 1000)}: malformed YAML: {one_line(_yaml_problem(failure, text))}") from None
    except RecursionError:  # a backstop: BoundedLoader refuses nesting well before Python's stack ends
        raise error(f"{one_line(str(path), 1000)}: malformed YAML: nested too deeply") from None


def keep_message(exc: BaseException, type_: Any) -> str:
    """cattrs' default formatter replaces validator messages with generic ones; keep them."""
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        keys = sorted(k if isinstance(k, str) and len(k) <= ECHO_LENGTH else shown(k) for k in exc.extra_fields)
        more = f" and {len(keys) - MAX_PROBLEMS} more" if len(keys) > MAX_PROBLEMS else ""
        return f"unknown key(s) {', '.join(one_line(k) for k in keys[:MAX_PROBLEMS])}{more}"
    if isinstance(exc, (ValueError, TypeError, OverflowError)) and str(exc):
        if "invalid literal" in str(exc) or "could not convert" in str(exc):
            return f"expected {getattr(type_, '__name__', type_)}, got an incompatible value"
        return one_line(str(exc))
    return one_line(cattrs.v.format_exception(exc, type_))


def strict_converter() -> cattrs.Converter:
    """A converter that forbids unknown keys and refuses to coerce numbers or strings into str or bool."""
    converter = cattrs.Converter(forbid_extra_keys=True)

    def strict_str(value: Any, _type: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type(value).__name__} {shown(value)}")
        return value

    def strict_bool(value: Any, _type: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {shown(value)}")
        return value

    def finite_float(value: Any, _type: Any) -> float:
        if isinstance(value, (str, bytes)) and len(value) > ECHO_LENGTH:
            raise ValueError(f"expected a number, got {shown(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {shown(value)}")
        return number

    converter.register_structure_hook(str, strict_str)
    converter.register_structure_hook(bool, strict_bool)
    converter.register_structure_hook(float, finite_float)
    return converter


def yaml_path(cattrs_path: str) -> str:
    """'$.pairs[2].b' -> 'pairs[2].b'."""
    return cattrs_path.removeprefix("$").removeprefix(".") or "(top level)"


def structure_or_explain(converter: cattrs.Converter, data: Any, cls: type, source: str,
                         error: Callable[[str], Exception]) -> Any:
    """``converter.structure(data, cls)``, or ``error("source: path: problem; ...")`` listing the problems
    (see :func:`explain`)."""
    try:
        return converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError) as failure:
        problems = []
        for line in cattrs.transform_error(failure, path="$", format_exception=keep_message):
            message, _, where = line.rpartition(" @ ")
            problems.append(f"{yaml_path(where)}: {message}")
        raise error(explain(source, problems)) from None
    except RecursionError:  # a backstop: read_yaml bounds the nesting of files
        raise error(f"{one_line(source, 1000)}: (top level): nested too deeply") from None


def _finite(attribute, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number, got {value}")


def positive(instance, attribute, value) -> None:
    """attrs validator: the field must be a finite number above zero (or None)."""
    if value is None:
        return
    _finite(attribute, value)
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {shown(value)}")


def at_least_two(instance, attribute, value) -> None:
    """attrs validator: a batch of at least two (contrastive and batch-statistic losses need pairs)."""
    positive(instance, attribute, value)
    if value < 2:
        raise ValueError(f"{attribute.name} must be at least 2 (contrastive and batch-statistic losses need pairs), got {value}")


def non_negative(instance, attribute, value) -> None:
    """attrs validator: the field must be a finite number, zero or above."""
    _finite(attribute, value)
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be zero or positive, got {shown(value)}")


def group_norm_widths(value) -> tuple[int, ...]:
    """attrs converter: a network's channel widths per level, each a multiple of 8 (its group norm's groups)."""
    widths = tuple(int(width) for width in value)
    if not widths or any(width < 8 or width % 8 for width in widths):
        raise ValueError(f"widths must be a non-empty list of multiples of 8 (the group norm's groups), got {value!r}")
    return widths


def fraction(instance, attribute, value) -> None:
    """attrs validator: a finite number in [0, 1] (a probability)."""
    _finite(attribute, value)
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be in [0, 1], got {shown(value)}")


def one_of(choices: tuple[str, ...]):
    """attrs validator: the field must be one of ``choices`` (a message a reader can act on, unlike
    attrs' ``in_``, whose error carries the whole attribute)."""

    def validate(instance, attribute, value) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}, got {shown(value)}")

    return validate
