"""Hooks, their docs and their callers stay in step (the datasette habit)."""

import inspect
from pathlib import Path

import pytest

from medm2g.registry import BACKEND_HOOKS, MODALITY_HOOKS, Modality, hookspecs

ALL_HOOKS = MODALITY_HOOKS + BACKEND_HOOKS

CONTRIBUTING = (Path(__file__).parents[2] / "CONTRIBUTING.md").read_text()


def declared_hooks() -> list[str]:
    return [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("medm2g_")]


def test_every_declared_hook_is_a_modality_or_backend_hook():
    assert sorted(declared_hooks()) == sorted(ALL_HOOKS)


@pytest.mark.parametrize("hook", ALL_HOOKS)
def test_every_hook_documents_when_it_is_called_with_an_example(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert "Example::" in doc and "@hookimpl" in doc, f"{hook} needs an example"
    assert ("Called" in doc) or ("called" in doc), f"{hook} must say when it is called"


@pytest.mark.parametrize("hook", ALL_HOOKS)
def test_every_hook_is_in_the_contributing_reference(hook):
    assert f"`{hook}(" in CONTRIBUTING


@pytest.mark.parametrize("hook", [h for h in MODALITY_HOOKS if h != "medm2g_modality_spec"])
def test_every_building_hook_has_a_modality_method_calling_it(hook):
    sources = inspect.getsource(Modality)
    assert f'"{hook}"' in sources
