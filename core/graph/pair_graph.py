"""The declarative pair graph: which modalities are used and which paired data exists.

A pair graph is what a researcher writes (``graphs/*.yaml``); the graph engine
(:mod:`medm2g.core.graph.engine`) derives everything else from it. Loading has
two steps, each with errors that name the file and the path inside it:

1. *structure*: YAML into the attrs classes below through one cattrs converter
   with unknown keys forbidden (``pairs[2].datset: unknown key``);
2. *validation* against the installed modalities (``pairs[2].b: unknown modality
   'pett' (did you mean 'pet'? installed: ...)``), self-pairs and duplicate pairs.

A malformed file (not UTF-8, nested too deep, control characters, an alias bomb, values of
the wrong type) is one :class:`GraphError` line naming the file and the place
(:func:`medm2g.core.structuring.read_yaml`).
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import attrs
import cattrs
from cattrs.errors import IterableValidationError
from cattrs.gen import make_dict_structure_fn, override

from medm2g.core.errors import GraphError
from medm2g.core.structuring import explain, read_yaml, shown, strict_converter, structure_or_explain
from medm2g.registry.manager import unknown_modality_message


def _datasets(value: str | Iterable[str]) -> tuple[str, ...]:
    """One dataset reference or a list of them; each is a manifest path or name."""
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items or not all(isinstance(item, str) and item.strip() for item in items):
        raise ValueError(f"expected a dataset reference or a non-empty list of them, got {shown(value)}")
    return items


@attrs.frozen
class BuiltInBackend:
    """What the graph engine needs to know of a backend shipped with medm2g when no plugin registry is
    at hand (a plan built from a graph alone); the backend's plugin registers the same facts from here,
    so a built-in backend is described in this one place and a third-party one in its plugin only.
    ``edge_stage_kind``: the stage planned per edge (None: the edges form medm2g's star);
    ``edge_modalities``: what an edge joins (``images`` or ``report-image``)."""

    description: str
    edge_stage_kind: str | None = None
    edge_modalities: str = "images"


BUILT_IN_BACKENDS = {
    "medm2g": BuiltInBackend("central alignment, latent diffusion and the multi-flow rounds (paired data)"),
    "syndiff": BuiltInBackend("adversarial diffusion translating images a <-> b (paired or unpaired data)",
                              "adversarial_diffusion"),
    "vq-ar": BuiltInBackend("anatomy-pathology prompts, a VQ-GAN codebook, word-patch alignment and a token "
                            "transformer generating an image from a report (paired report-image data)",
                            "vq_autoregressive", "report-image"),
}
"""What an edge's data can train with medm2g alone installed; ``medm2g`` is the default."""


def _backend(value: Any) -> str:
    """A backend's name (the structure hook: errors then name ``pairs[i].backend``); whether it is
    installed is checked against the plugins' backends (:func:`backend_problems`)."""
    if not isinstance(value, str):
        raise ValueError(f"expected a backend name ({', '.join(BUILT_IN_BACKENDS)}), got {shown(value)}")
    _backend_name(None, None, value)
    return value


def _backend_name(instance, attribute, value: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z][a-z0-9_]*(-[a-z0-9_]+)*", value):
        raise ValueError(f"a backend name is a lowercase name (letters, digits, _ and - between words), "
                         f"got {shown(value)}")


def backend_problems(graph: "PairGraph", known: Iterable[str]) -> list[str]:
    """``pairs[i].backend: unknown backend ...`` for every edge naming a backend not in ``known``
    (the installed backends' names; medm2g's and syndiff's when no registry is at hand)."""
    known = list(known)
    problems = []
    for index, edge in enumerate(graph.pairs):
        if edge.backend not in known:
            close = difflib.get_close_matches(edge.backend, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"pairs[{index}].backend: unknown backend {shown(edge.backend)} "
                            f"({hint}known: {', '.join(known)})")
    return problems


@attrs.frozen
class PairEdge:
    """Data available between modalities ``a`` and ``b``, and what trains on it.

    ``dataset`` names the manifest(s) holding the pairs, relative to the graph
    file. ``paired: false`` marks data of both modalities from different subjects,
    usable for unpaired translation but never for contrastive alignment.
    ``backend`` says what the data train: ``medm2g`` (the default) makes the edge part
    of the alignment star and the multi-flow rounds; ``syndiff`` trains an adversarial
    diffusion translating a <-> b instead, from paired or unpaired data; ``vq-ar`` a report ->
    image token model on paired report-image data. The same pair may be listed once per backend.
    """

    a: str
    b: str
    dataset: tuple[str, ...] = attrs.field(converter=_datasets)
    paired: bool = True
    backend: str = attrs.field(default="medm2g", validator=_backend_name)

    @property
    def key(self) -> frozenset[str]:
        """Order-free identity of the pair: text-ct and ct-text are the same pair."""
        return frozenset((self.a, self.b))

    def other(self, modality: str) -> str:
        return self.b if modality == self.a else self.a

    @property
    def label(self) -> str:
        return f"{self.a}-{self.b}"

    @property
    def is_translation(self) -> bool:
        """True for an edge that trains a translation backend rather than medm2g's own stages."""
        return self.backend != "medm2g"


@attrs.frozen
class SingleModalityData:
    """Data of one modality alone (an MRI-only dataset such as IXI or BraTS): it trains that
    modality's VAE and LDM (and, in a graph of that modality alone, its prompt encoder through the
    visual invariant), never an alignment or a multi-flow round, which need pairs."""

    modality: str
    dataset: tuple[str, ...] = attrs.field(converter=_datasets)


@attrs.frozen
class PairGraph:
    """A whole pair graph as written by the user.

    ``center`` is the central modality of the alignment star; when omitted the
    engine chooses the modality that links the most others through paired data.
    ``freeze_center`` keeps the centre's prompt encoder frozen from the first
    alignment stage on (a pretrained text encoder, say). ``evaluation`` names a
    held-out manifest whose records carry several modalities of one subject
    (retrieval and generation are scored on it); like datasets, it is relative
    to the graph file. ``intensity_windows`` says, per imaging modality, which part of its
    intensity scale the data's anatomy lives in (head CT: ``ct: [-100, 200]`` HU), because it is
    a fact about the data, not about the plugin (generic CT) or the run; a run config's
    ``grids.<modality>.intensity_window`` still overrides it for one run. ``single_modality`` lists
    data of one modality alone (:class:`SingleModalityData`).
    """

    modalities: tuple[str, ...] = attrs.field(converter=tuple)
    pairs: tuple[PairEdge, ...] = attrs.field(converter=tuple)
    name: str = ""
    description: str = ""
    center: str | None = None
    freeze_center: bool = False
    evaluation: str | None = None
    intensity_windows: Mapping[str, tuple[float, float]] = attrs.field(factory=dict, hash=False)
    single_modality: tuple[SingleModalityData, ...] = attrs.field(default=(), converter=tuple)
    source: str = "<memory>"

    def base_dir(self) -> Path:
        """Folder dataset references are relative to."""
        return Path(self.source).parent if self.source != "<memory>" else Path.cwd()


def _make_converter() -> cattrs.Converter:
    converter = strict_converter()
    converter.register_structure_hook_func(lambda t: t == tuple[str, ...], lambda value, _t: _string_list(value))
    edge_fn = make_dict_structure_fn(
        PairEdge, converter, _cattrs_forbid_extra_keys=True,
        dataset=override(struct_hook=lambda value, _t: _datasets(value)),
        backend=override(struct_hook=lambda value, _t: _backend(value)),
    )
    converter.register_structure_hook(PairEdge, lambda value, _t: edge_fn(_mapping(value, "a, b, dataset"), _t))
    converter.register_structure_hook_func(
        lambda t: t == tuple[PairEdge, ...],
        lambda value, _t: _structure_edges(converter, value),
    )
    single_fn = make_dict_structure_fn(SingleModalityData, converter, _cattrs_forbid_extra_keys=True,
                                       dataset=override(struct_hook=lambda value, _t: _datasets(value)))
    converter.register_structure_hook(SingleModalityData,
                                      lambda value, _t: single_fn(_mapping(value, "modality, dataset"), _t))
    converter.register_structure_hook(
        PairGraph,
        make_dict_structure_fn(PairGraph, converter, _cattrs_forbid_extra_keys=True, source=override(omit=True),
                               intensity_windows=override(struct_hook=lambda value, _t: _windows(value))),
    )
    return converter


def _mapping(value: Any, keys: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping with keys {keys}, got {type(value).__name__} {shown(value)}")
    return value


def _structure_edges(converter: cattrs.Converter, value: Any) -> tuple[PairEdge, ...]:
    """Structure the pair list, collecting every bad item as cattrs does for its own lists."""
    if isinstance(value, (str, Mapping)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of pairs, got {type(value).__name__}")
    edges, errors = [], []
    for index, item in enumerate(value):
        try:
            edges.append(converter.structure(item, PairEdge))
        except Exception as error:  # re-raised below as one group, as cattrs does
            error.__notes__ = [*getattr(error, "__notes__", []), cattrs.errors.IterableValidationNote(f"@ index {index}", index, PairEdge)]
            errors.append(error)
    if errors:
        raise IterableValidationError("pairs", errors, tuple[PairEdge, ...])
    return tuple(edges)


def _windows(value: Any) -> dict[str, tuple[float, float]]:
    """``{modality: [low, high]}`` with finite numbers, low below high."""
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping modality -> [low, high], got {shown(value)}")
    windows = {}
    for name, window in value.items():
        if (not isinstance(window, (list, tuple)) or len(window) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in window)):
            raise ValueError(f"{shown(name)}: expected [low, high] numbers, got {shown(window)}")
        low, high = float(window[0]), float(window[1])
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"{shown(name)}: expected finite low < high, got {shown(window)}")
        windows[str(name)] = (low, high)
    return windows


def _string_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of names, got {shown(value)}")
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"expected a list of names, got item {shown(item)}")
    return tuple(value)


CONVERTER = _make_converter()


def structure_pair_graph(data: Any, source: str = "<memory>") -> PairGraph:
    """Turn parsed YAML into a :class:`PairGraph`, or raise one :class:`GraphError` listing every problem."""
    if not isinstance(data, Mapping):
        raise GraphError(f"{source}: expected a mapping with 'modalities' and 'pairs', got {type(data).__name__}")
    graph = structure_or_explain(CONVERTER, dict(data), PairGraph, source, GraphError)
    return attrs.evolve(graph, source=source)


def load_pair_graph(path: Path | str, installed: Iterable[str] | None = None) -> PairGraph:
    """Read, structure and (when ``installed`` is given) validate a pair graph file."""
    path = Path(path)
    graph = structure_pair_graph(read_yaml(path, "pair graph", GraphError), source=str(path))
    if installed is not None:
        validate_pair_graph(graph, installed)
    else:
        problems = backend_problems(graph, BUILT_IN_BACKENDS)
        if problems:
            raise GraphError(f"{graph.source}: {problems[0]}")
    return graph


def validate_pair_graph(graph: PairGraph, installed: Iterable[str]) -> None:
    """Check names against the installed modalities (and backends, when ``installed`` is a registry)
    and the pairs against each other."""
    backends = getattr(installed, "backends", None)
    installed = sorted(installed)
    problems: list[str] = backend_problems(graph, backends if backends else BUILT_IN_BACKENDS)
    seen_modalities: dict[str, int] = {}
    for index, name in enumerate(graph.modalities):
        if name not in installed:
            problems.append(f"modalities[{index}]: {unknown_modality_message(name, installed)}")
        elif name in seen_modalities:
            problems.append(f"modalities[{index}]: {name!r} is listed twice (first at modalities[{seen_modalities[name]}])")
        seen_modalities.setdefault(name, index)
    if not graph.modalities:
        problems.append("modalities: expected at least one modality")
    if graph.center is not None and graph.center not in seen_modalities:
        problems.append(f"center: {shown(graph.center)} is not one of the graph's modalities ({', '.join(graph.modalities)})")
    for name in graph.intensity_windows:
        if name not in seen_modalities:
            problems.append(f"intensity_windows.{name}: not one of the graph's modalities ({', '.join(graph.modalities)})")
    seen_pairs: dict[tuple[frozenset[str], str], int] = {}
    for index, edge in enumerate(graph.pairs):
        for side in ("a", "b"):
            name = getattr(edge, side)
            if name not in installed:
                problems.append(f"pairs[{index}].{side}: {unknown_modality_message(name, installed)}")
            elif name not in seen_modalities:
                problems.append(
                    f"pairs[{index}].{side}: {name!r} is not listed in modalities ({', '.join(graph.modalities)})"
                )
        if edge.a == edge.b:
            problems.append(f"pairs[{index}]: a self-pair ({edge.a}-{edge.b}) carries no cross-modal information")
        elif (edge.key, edge.backend) in seen_pairs:
            first = seen_pairs[edge.key, edge.backend]
            problems.append(
                f"pairs[{index}]: duplicate of pairs[{first}] ({edge.label}, backend {edge.backend}); "
                f"list several datasets under one pair"
            )
        seen_pairs.setdefault((edge.key, edge.backend), index)
    for index, single in enumerate(graph.single_modality):
        if single.modality not in seen_modalities:
            problems.append(f"single_modality[{index}].modality: {shown(single.modality)} is not listed in modalities "
                            f"({', '.join(graph.modalities)})")
    if problems:
        raise GraphError(explain(graph.source, problems))
