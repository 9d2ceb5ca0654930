"""The pair graphs installed with medm2g, and graph arguments that name one of them."""

from __future__ import annotations

from pathlib import Path

from medm2g.core.errors import GraphError


def shipped_graphs_dir() -> Path:
    """The folder of graphs installed with medm2g.

    ``medm2g.graphs`` is a data-only namespace package; an editable install adds a
    path-hook entry to its ``__path__`` that importlib.resources rejects, so take
    the first real directory.
    """
    import medm2g.graphs

    return next(Path(entry) for entry in medm2g.graphs.__path__ if Path(entry).is_dir())


def resolve_graph_path(argument: str) -> Path:
    """A path as given, or else the name of a graph shipped with medm2g (``medm2g.yaml``)."""
    path = Path(argument)
    if path.exists():
        return path
    bundled = shipped_graphs_dir()
    for name in (path.name, f"{path.name}.yaml"):
        if (bundled / name).is_file():
            return bundled / name
    shipped = sorted(p.name for p in bundled.glob("*.yaml"))
    raise GraphError(f"{argument}: no such pair graph file (graphs shipped with medm2g: {', '.join(shipped)})")
