"""Malformed files a person writes (pair graphs, run configs, manifests): whatever the bytes, the
loader returns or raises the project's error, in one line of bounded length, quickly."""

import json
import time

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from medm2g.core.config.run_config import load_run_config
from medm2g.core.data.manifest import read_manifest, validate_manifest
from medm2g.core.errors import ConfigError, DataError, GraphError, MedM2GError
from medm2g.core.graph.pair_graph import load_pair_graph
from medm2g.core.structuring import MAX_YAML_DEPTH, MAX_YAML_VALUES, one_line, shown

INSTALLED = ["ct", "mri", "text", "xray"]
LONGEST = 4000
"""A message is at most this long, besides the file's name (which the test chooses)."""


def alias_bomb(width: int, levels: int) -> str:
    """``levels`` anchored lists, each holding ``width`` aliases of the one before: width**levels values."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * width)}]" for k in range(1, levels)]
    return "\n".join(lines) + f"\nmodalities: *l{levels - 1}\npairs: *l{levels - 1}\nalignment: *l{levels - 1}\n"


def deep(levels: int, flow: bool) -> str:
    if flow:
        return "modalities: " + "[" * levels + "]" * levels + "\n"
    return "".join(f"{' ' * k}k{k}:\n" for k in range(levels)) + " " * levels + "x\n"


SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80)
           | st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=3))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
KEYS = st.sampled_from(["modalities", "pairs", "center", "name", "freeze_center", "evaluation", "size", "seed",
                        "embed_dim", "alignment", "vae", "ldm", "acceleration", "models", "grids", "diffusion"])
WRONG_TYPES = st.dictionaries(KEYS, VALUES, max_size=5).map(lambda d: yaml.safe_dump(d, allow_unicode=True))
CONTROL = st.tuples(st.sampled_from(["modalities: [text, ct]\npairs: []\n", "vae: {steps: 3}\n", "name: x\n"]),
                    st.integers(0, 20), st.sampled_from(["\x00", "\x07", "\x1b", "\x1b[2J", "\r", "\x85", "\ufeff"])
                    ).map(lambda t: t[0][:t[1]] + t[2] + t[0][t[1]:])
MALFORMED_YAML = (
    st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
    | st.builds(deep, st.integers(MAX_YAML_DEPTH - 3, 3000), st.booleans())
    | st.builds(alias_bomb, st.integers(2, 12), st.integers(2, 9))
    | WRONG_TYPES | CONTROL
    | st.just("a: &a [*a]\n") | st.just("modalities: [\n") | st.just("--- 1\n--- 2\n")
)


def check(load, path, errors: type, started: float) -> None:
    try:
        load(path)
    except MedM2GError as error:
        assert isinstance(error, errors), f"{type(error).__name__}: {error}"
        message = str(error)
        assert message.startswith(f"{path}: "), message[:200]
        assert "\n" not in message and "\r" not in message, message[:400]
        assert len(message) <= len(str(path)) + LONGEST, (len(message), message[:400])
    # CPU seconds of this process, not wall time: the suite's other worker shares the machine; an
    # expanding alias bomb or a quadratic parse would take minutes, not a few seconds
    assert time.process_time() - started < 5, f"{time.process_time() - started:.1f} s of CPU"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=MALFORMED_YAML, raw=st.booleans(), data=st.data())
@example(text=alias_bomb(9, 5), raw=False, data=None)
@example(text=deep(1000, True), raw=False, data=None)
@example(text="name: caf\xe9\n", raw=True, data=None)
def test_a_malformed_graph_or_run_config_is_one_bounded_line_quickly(tmp_path, text, raw, data):
    path = tmp_path / "g.yaml"
    # raw: the text's code points as bytes (non-UTF-8 where above 127); else the text in UTF-8
    path.write_bytes(text.encode("latin-1", errors="replace") if raw else text.encode("utf-8", errors="replace"))
    check(lambda p: load_pair_graph(p, installed=INSTALLED), path, GraphError, time.process_time())
    check(load_run_config, path, ConfigError, time.process_time())


def jsonl(rows) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


ROW = st.fixed_dictionaries({"subject_id": VALUES}, optional={"split": VALUES, "slice": VALUES, "ct": VALUES,
                                                               "text": VALUES, "tetx": VALUES})
MALFORMED_MANIFESTS = st.one_of(
    st.tuples(st.just(".csv"), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))),
    st.tuples(st.just(".jsonl"), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))),
    st.tuples(st.just(".parquet"), st.binary(max_size=100).map(lambda b: b.decode("latin-1"))),
    st.tuples(st.just(".jsonl"), st.lists(ROW | VALUES, max_size=4).map(jsonl)),
    st.tuples(st.just(".jsonl"), st.integers(100, 5000).map(lambda n: '{"subject_id": ' + "[" * n + "]" * n + "}\n")),
    st.tuples(st.just(".csv"), st.lists(st.lists(st.text(max_size=12), max_size=5), min_size=1, max_size=5).map(
        lambda rows: "\n".join(",".join(row) for row in [["subject_id", "ct", "text"], *rows]))),
    st.tuples(st.just(".csv"), CONTROL.map(lambda t: "subject_id,ct\n" + t.replace(": ", ",").replace("\n", "\n"))),
    st.tuples(st.sampled_from([".csv", ".jsonl"]), st.integers(1, 3).map(
        lambda k: "subject_id,ct,text\nS1,x.nii.gz," + "y" * 200_000 * k + "\n")),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest=MALFORMED_MANIFESTS, raw=st.booleans())
@example(manifest=(".jsonl", '[1, 2]\n'), raw=False)
@example(manifest=(".jsonl", '{"subject_id": "S1", "ct": "a\\u0000b"}\n'), raw=False)
@example(manifest=(".csv", "subject_id,ct\nS1,a,b,c\n"), raw=False)
@example(manifest=(".csv", "subject_id,ct\nS\x001,a\n"), raw=False)
def test_a_malformed_manifest_is_one_bounded_line_quickly(tmp_path, installed, manifest, raw):
    suffix, text = manifest
    path = tmp_path / f"m{suffix}"
    path.write_bytes(text.encode("latin-1", errors="replace") if raw else text.encode("utf-8", errors="replace"))
    check(lambda p: validate_manifest(read_manifest(p, installed), installed), path, DataError, time.process_time())


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN"])
@pytest.mark.parametrize("field", ["ldm: {learning_rate: %s}", "alignment: {weight_decay: %s}",
                                   "acceleration: {ema_decay: %s}", "grids: {ct: {intensity_window: [0, %s]}}",
                                   "vae: {learning_rate: %s}"])
def test_no_config_field_takes_a_number_that_is_not_finite(tmp_path, field, value):
    path = tmp_path / "n.yaml"
    path.write_text(field % value + "\n")
    with pytest.raises(ConfigError, match=r"n.yaml: .*expected a finite number, got "):
        load_run_config(path)


def test_the_validators_refuse_what_is_not_finite():
    import attrs

    from medm2g.core.structuring import non_negative, positive

    @attrs.frozen
    class Settings:
        rate: float = attrs.field(default=1.0, validator=positive)
        decay: float = attrs.field(default=0.0, validator=non_negative)

    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rate must be a finite number"):
            Settings(rate=bad)
        with pytest.raises(ValueError, match="decay must be a finite number"):
            Settings(decay=bad)
    with pytest.raises(ValueError, match="rate must be a finite number"):
        Settings(rate=-float("inf"))
    assert Settings(rate=1e-30, decay=0.0).rate == 1e-30


def test_named_malformations_each_say_what_and_where(tmp_path):
    path = tmp_path / "g.yaml"
    cases = {
        b"name: caf\xe9\n": "not UTF-8 text: invalid continuation byte at line 1 (byte 9)",
        deep(1000, True).encode(): f"malformed YAML: line 1, column {MAX_YAML_DEPTH + 12}: nested deeper than",
        b"name: a\x07b\n": "malformed YAML: line 1, column 8: character U+0007 is not allowed in YAML",
        alias_bomb(9, 5).encode(): f"more than {MAX_YAML_VALUES} values once its aliases are expanded",
        b"a: &a [*a]\n": "an alias inside the value it names (recursive)",
        b"modalities: [text]\npairs: []\ncenter: " + b"x" * 100_000 + b"\n": "center: 'xxxxxxxxx",
    }
    for content, expected in cases.items():
        path.write_bytes(content)
        with pytest.raises(GraphError) as error:
            load_pair_graph(path, installed=INSTALLED)
        assert expected in str(error.value) and len(str(error.value)) < 1000, str(error.value)[:300]


def test_echoed_values_are_short_single_lines():
    assert shown("x" * 10_000) == "'" + "x" * 27 + "..." + "x" * 28 + "'"
    assert shown([[[[[[1]]]]]]) == "[[[[...]]]]" and len(shown(list(range(10**5)))) <= 60
    assert one_line("a\nb\x1b[2Jc") == "a\\nb\\x1b[2Jc"
