"""The command line when its reader goes away, and its thread settings (#19, items 5 and 8)."""

import os
import subprocess
import sys

import pytest

from medm2g.core import threads
from medm2g.core.apps.cli import main


def test_a_reader_that_goes_away_is_no_traceback():
    """`medm2g modalities --json | head`: the pipe's reader closed before medm2g writes."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run([sys.executable, "-m", "medm2g.core.apps.cli", "modalities", "--json"],
                                stdout=writer, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(writer)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr[-600:]
    assert result.stderr == "" and result.returncode == 141


def test_threads_option_reaches_the_thread_settings(monkeypatch, capsys, tmp_path):
    calls = []
    monkeypatch.setattr(threads, "configure_threads", lambda count=None, environ=None: calls.append(count))
    absent = str(tmp_path / "absent.yaml")  # a command that ends quickly, in an error
    assert main(["--threads", "3", "config", absent]) == 1
    assert main(["config", absent]) == 1
    assert calls == [3, None]


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_threads_must_be_a_positive_whole_number(value, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--threads", value, "modalities"])
    assert raised.value.code == 2
    assert "argument --threads: expected a positive whole number of threads" in capsys.readouterr().err
