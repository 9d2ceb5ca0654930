"""history.jsonl is append-only and survives a kill in the middle of a write (#19, item 6)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medm2g.core.errors import CheckpointError
from medm2g.core.training.history import append_history, read_history, truncate_history

ROWS = [{"step": k, "loss": 1.0 / (k + 1), "seconds": 0.5 * k} for k in range(6)]


def whole(rows):
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def test_a_torn_last_line_is_ignored_on_read(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_bytes(whole(ROWS[:4]) + b'{"step": 4, "lo')
    assert read_history(path) == ROWS[:4]


def test_a_resumed_stage_truncates_past_a_torn_line_and_appends_cleanly(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_bytes(whole(ROWS[:4]) + b'{"step": 4, "loss": 0.2')
    truncate_history(path, 3)  # the checkpoint was at step 3
    append_history(path, ROWS[3:])
    assert read_history(path) == ROWS
    assert path.read_bytes() == whole(ROWS)
    assert [p.name for p in tmp_path.iterdir()] == ["history.jsonl"]  # no temporary file left


def test_an_append_after_a_torn_line_cuts_it_off(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_bytes(whole(ROWS[:2]) + b'{"step": 2, "loss"')
    append_history(path, ROWS[2:])
    assert path.read_bytes() == whole(ROWS)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, len(whole(ROWS))))
def test_the_log_cut_at_any_byte_reads_as_its_whole_lines(tmp_path_factory, cut):
    path = tmp_path_factory.mktemp("cut") / "history.jsonl"
    path.write_bytes(whole(ROWS)[:cut])
    rows = read_history(path)
    assert rows == ROWS[:len(rows)]
    assert len(rows) == whole(ROWS)[:cut].count(b"\n")
    append_history(path, ROWS[len(rows):])
    assert read_history(path) == ROWS


def test_a_damaged_line_before_the_end_is_a_one_line_error(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_bytes(whole(ROWS[:2]) + b"garbage\n" + whole(ROWS[2:3]))
    with pytest.raises(CheckpointError, match=r"history.jsonl: line 3 is not a JSON row"):
        read_history(path)
