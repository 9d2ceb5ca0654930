"""Imports run one way: no cycle between files or folders, and no package imports a layer above it.

The layers, lowest first, are the ones ``docs/architecture.md`` lists; the test reads every
import statement of the source tree (function-level ones included, ``if TYPE_CHECKING``
blocks excluded) without importing anything, so a new cycle fails here before it fails
at run time.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SOURCE_FOLDERS = {"core": "medm2g.core", "registry": "medm2g.registry", "plugins": "medm2g.plugins"}
FOUNDATIONS = ("medm2g.core.errors", "medm2g.core.optimisation", "medm2g.core.progress", "medm2g.core.structuring",
               "medm2g.core.threads")
"""The five loose modules of core (its package docstring is the only thing in medm2g.core itself)."""

LAYERS = (
    (*FOUNDATIONS, "medm2g.core"),
    ("medm2g.registry",),
    ("medm2g.core.models",),
    ("medm2g.core.diffusion",),
    ("medm2g.core.config",),
    ("medm2g.core.graph",),
    ("medm2g.core.io",),
    ("medm2g.core.data",),
    ("medm2g.core.metrics",),
    ("medm2g.core.prompting",),
    ("medm2g.core.phantom",),
    ("medm2g.core.training",),
    ("medm2g.core.generation",),
    ("medm2g.core.backends",),
    ("medm2g.core.evaluation",),
    ("medm2g.core.apps",),
    # the conformance checks build cross-guidance as training does; nothing imports them
    ("medm2g.plugins", "medm2g.registry.conformance"),
)
"""Lowest first: a module may import its own layer and those below it, never one above."""


def source_modules() -> dict[str, Path]:
    modules = {}
    for folder, package in SOURCE_FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name an import statement of the file can bind (``from a import b`` gives a.b)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([child.module] if child.module else []))
                names.update(f"{base}.{alias.name}" for alias in child.names)
                names.add(base)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the source modules it imports (the longest source module each name falls in)."""
    modules = source_modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path, module):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the components with more than one node are the cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def folder_of(module: str, modules: dict[str, Path]) -> str:
    return module if modules[module].name == "__init__.py" else module.rpartition(".")[0]


def layer_of(module: str) -> int:
    best, depth = None, -1
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (module.startswith(prefix + ".") and prefix != "medm2g.core")
            if matches and len(prefix) > depth:
                best, depth = rank, len(prefix)
    return best


def test_no_import_cycle_between_files():
    assert strongly_connected(import_graph()) == []


def test_no_import_cycle_between_folders():
    modules, folders = source_modules(), defaultdict(set)
    for module, targets in import_graph().items():
        for target in targets:
            a, b = folder_of(module, modules), folder_of(target, modules)
            if a != b and not a.startswith(b + ".") and not b.startswith(a + "."):
                folders[a].add(b)
    assert strongly_connected(folders) == []


def test_every_module_has_a_layer():
    assert [m for m in source_modules() if layer_of(m) is None] == []


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{module} -> {target}" for module, targets in sorted(import_graph().items())
              for target in sorted(targets) if layer_of(target) > layer_of(module)]
    assert upward == []


def test_the_architecture_page_lists_the_layers_in_this_order():
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\d+\. `([^`]+)`", page, flags=re.MULTILINE)
    expected = [prefixes[0].removeprefix("medm2g.") for prefixes in LAYERS]
    expected[0] = "core.errors"
    assert listed == expected


@pytest.mark.parametrize("source, cycle", [
    ("import b\n", None),
    ("from . import a\n", "a"),
])
def test_the_walker_sees_relative_and_absolute_imports(tmp_path, source, cycle):
    path = tmp_path / "b.py"
    path.write_text(source)
    names = imported_names(path, "pkg.b")
    assert ("pkg.a" in names) == (cycle == "a")


def test_a_planted_cycle_is_found():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
