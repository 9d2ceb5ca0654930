"""Load, validate and look up modality plugins.

There is no global plugin manager: :func:`load_modalities` builds a fresh one
each time, so tests can register extra plugins for the length of one test and
nothing is imported as a side effect of importing medm2g.

Every hook is called through the plugin manager, so pluggy's ``firstresult`` and hook
wrappers take effect: a modality hook is called on a subset of the plugins that leaves out
every *other* modality's plugin, so the owner answers and a wrapper from any plugin
(``@hookimpl(wrapper=True)``, in a plugin that provides no modality) wraps the call.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import itertools
import logging
import types
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import attrs
import pluggy

import medm2g.registry.hookspecs as hookspecs
from medm2g.core.errors import PluginError
from medm2g.registry.hookspecs import BACKEND_HOOKS, IMAGING_ONLY_HOOKS, MODALITY_HOOKS, OPTIONAL_HOOKS, PROJECT_NAME
from medm2g.registry.specs import BackendSpec, ModalitySpec, ModelSize, PhantomRendering

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT_NAME
"""Third-party modalities and backends arrive through this entry-point group (``pip install medm2g-pet``)."""


@attrs.frozen
class PluginSource:
    """Where a plugin came from, for error messages and ``medm2g modalities``."""

    plugin_name: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution:
            return f"{self.plugin_name!r} from {self.distribution} {self.version}"
        return f"{self.plugin_name!r} (registered directly)"


@attrs.frozen(eq=False)
class Modality:
    """One installed modality: its spec and the plugin that builds its parts.

    Each method calls exactly one hook on exactly this modality's plugin.
    """

    spec: ModalitySpec
    source: PluginSource
    _plugin: object = attrs.field(alias="plugin", repr=False)
    _manager: pluggy.PluginManager = attrs.field(alias="manager", repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def _call(self, hook_name: str, **kwargs: Any) -> Any:
        if not _implements(self._manager, self._plugin, hook_name):
            raise PluginError(f"plugin {self.source} does not implement {hook_name} for modality {self.name!r}")
        return _owner_caller(self._manager, hook_name, self._plugin)(**kwargs)

    def prompt_encoder(self, size: ModelSize | str, embed_dim: int, options: Mapping[str, Any] | None = None):
        """C_M: a fresh prompt encoder mapping a batch to (B, embed_dim); ``options`` override its config."""
        return self._call("medm2g_prompt_encoder", spec=self.spec, size=ModelSize(size), embed_dim=embed_dim,
                          options=dict(options or {}))

    def vae(self, size: ModelSize | str, options: Mapping[str, Any] | None = None):
        """A fresh VAE mapping a batch to (B, *spec.latent_shape) and back; ``options`` from the run config."""
        return self._call("medm2g_vae", spec=self.spec, size=ModelSize(size), options=dict(options or {}))

    def unet(self, size: ModelSize | str, context_dim: int, options: Mapping[str, Any] | None = None):
        """A fresh denoiser predicting noise from (latents, timesteps, context); ``options`` from the run config."""
        return self._call("medm2g_unet", spec=self.spec, size=ModelSize(size), context_dim=context_dim,
                          options=dict(options or {}))

    def augmentation(self):
        """The random view maker of the visual invariant (imaging modalities only)."""
        if not self.spec.kind.is_imaging:
            raise PluginError(f"modality {self.name!r} is {self.spec.kind.value}: it has no visual augmentations")
        return self._call("medm2g_augmentation", spec=self.spec)

    def read(self, path: Path | str):
        """Read one file into model space."""
        return self._call("medm2g_read", spec=self.spec, path=Path(path))

    def write(self, sample, path: Path | str, provenance=None) -> Path:
        """Write one model-space sample, marked with its provenance; returns the path written."""
        return self._call("medm2g_write", spec=self.spec, sample=sample, path=Path(path), provenance=provenance)

    def vocabularies(self) -> list[Path]:
        """The anatomy-pathology vocabulary files the plugin declares (none when it declares none)."""
        if not _implements(self._manager, self._plugin, "medm2g_vocabularies"):
            return []
        return [Path(path) for path in self._call("medm2g_vocabularies", spec=self.spec) or []]

    def phantom_render(self, subject, generator) -> PhantomRendering | None:
        """Render one phantom subject, or None when this modality takes no part in the cohort."""
        if not _implements(self._manager, self._plugin, "medm2g_phantom_render"):
            return None
        rendering = self._call("medm2g_phantom_render", spec=self.spec, subject=subject, generator=generator)
        if rendering is not None and not isinstance(rendering, PhantomRendering):
            raise PluginError(f"plugin {self.source}: medm2g_phantom_render must return a PhantomRendering, "
                              f"got {type(rendering).__name__}")
        return rendering


class ModalityRegistry(Mapping[str, Modality]):
    """Read-only mapping from modality name to :class:`Modality`, sorted by name."""

    def __init__(self, modalities: Iterable[Modality], manager: pluggy.PluginManager,
                 backends: Mapping[str, BackendSpec] | None = None):
        self._by_name = {m.name: m for m in sorted(modalities, key=lambda m: m.name)}
        self.manager = manager
        self.backends: Mapping[str, BackendSpec] = types.MappingProxyType(dict(sorted((backends or {}).items())))
        """The installed generation backends by name (``medm2g``, ``syndiff``, third-party ones)."""

    def backend(self, name: str) -> BackendSpec:
        """The backend registered under ``name``, or an error naming the installed ones."""
        try:
            return self.backends[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self.backends), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise PluginError(f"unknown backend {name!r} ({hint}installed: {', '.join(self.backends) or 'none'})") from None

    def __getitem__(self, name: str) -> Modality:
        try:
            return self._by_name[name]
        except KeyError:
            raise PluginError(unknown_modality_message(name, self._by_name)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def with_spec_changes(self, changes: Mapping[str, Mapping[str, Any]], source: str = "run config") -> "ModalityRegistry":
        """A registry whose named modalities have some spec fields replaced (a larger grid for the
        paper's sizes, say); the spec's validators check the result, and errors name ``source``."""
        modalities = []
        for name, modality in self._by_name.items():
            if name in changes:
                try:
                    spec = attrs.evolve(modality.spec, **changes[name])
                except (TypeError, ValueError) as error:
                    raise PluginError(f"{source}: {name}: {error}") from None
                modality = attrs.evolve(modality, spec=spec)
            modalities.append(modality)
        unknown = sorted(set(changes) - set(self._by_name))
        if unknown:
            raise PluginError(f"{source}: {unknown_modality_message(unknown[0], self._by_name)}")
        return ModalityRegistry(modalities, self.manager, self.backends)


def unknown_modality_message(name: str, installed: Iterable[str]) -> str:
    """"unknown modality 'pett' (did you mean 'pet'? installed: ct, mri, pet, text, xray)"."""
    installed = sorted(installed)
    close = difflib.get_close_matches(str(name), installed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown modality {name!r} ({hint}installed: {', '.join(installed) or 'none'})"


def load_modalities(extra_plugins: Iterable[object] = (), *, entry_points: bool = True) -> ModalityRegistry:
    """Build a plugin manager, load and validate every modality plugin.

    ``entry_points=False`` with ``extra_plugins`` gives a registry of exactly the
    plugins given, which is what tests of broken plugins want.
    """
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    sources: dict[int, PluginSource] = {}  # by id of the object registered
    given: set[int] = set()  # ids of the plugins given (an unhashable one is registered as a stand-in)
    plugins = _load_entry_points() if entry_points else iter(())
    extras = ((plugin, PluginSource(_plugin_name(plugin))) for plugin in extra_plugins)
    for plugin, source in itertools.chain(plugins, extras):
        if id(plugin) in given or manager.is_registered(plugin):
            continue
        given.add(id(plugin))
        sources[id(_register(manager, plugin, source))] = source
    _check_unknown_hooks(manager, sources)
    return ModalityRegistry(_collect_modalities(manager, sources), manager, _collect_backends(manager, sources))


def _load_entry_points() -> Iterator[tuple[object, PluginSource]]:
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        source = PluginSource(entry_point.name, dist.name if dist else None, dist.version if dist else None)
        try:
            plugin = entry_point.load()
        except Exception as error:  # an import error in someone else's package must not read as ours
            raise PluginError(
                f"plugin {source}: entry point {entry_point.value!r} failed to import: "
                f"{type(error).__name__}: {error}"
            ) from error
        yield plugin, source


def _plugin_name(plugin: object) -> str:
    if isinstance(plugin, _ByIdentity):
        plugin = plugin.plugin
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__
    return getattr(plugin, "__name__", None) or type(plugin).__name__


class _ByIdentity:
    """Stands in for an unhashable plugin object (a frozen attrs class holding a dict, say) in the
    plugin manager: pluggy keeps plugins in sets when it calls a hook on a subset of them, so a
    registered plugin must hash. The stand-in hashes by identity and holds the plugin's hook
    implementations (its bound methods marked with ``hookimpl``) as its own attributes, where
    pluggy finds them."""

    def __init__(self, plugin: object):
        self.plugin = plugin
        for name in dir(plugin):
            if isinstance(inspect.getattr_static(plugin, name, None), property):
                continue  # not a hook, and reading it could run code
            method = getattr(plugin, name, None)
            if inspect.isroutine(method) and getattr(method, f"{PROJECT_NAME}_impl", None) is not None:
                setattr(self, name, method)

    def __repr__(self) -> str:
        return repr(self.plugin)


def _register(manager: pluggy.PluginManager, plugin: object, source: PluginSource) -> object:
    """Register ``plugin``; returns the object registered (``plugin``, or its identity proxy)."""
    try:
        hash(plugin)
    except TypeError:
        plugin = _ByIdentity(plugin)
    try:
        manager.register(plugin, name=f"{source.plugin_name}@{id(plugin)}")
    except pluggy.PluginValidationError as error:
        # pluggy's message spans lines and names the plugin by our internal key; keep one line
        detail = "; ".join(line.strip() for line in str(error).splitlines()[1:] if line.strip())
        raise PluginError(f"plugin {source}: {detail}") from error
    return plugin


def _is_wrapper(impl: pluggy.HookImpl) -> bool:
    return bool(impl.hookwrapper or impl.wrapper)


def _implements(manager: pluggy.PluginManager, plugin: object, hook_name: str) -> bool:
    """Whether ``plugin`` answers ``hook_name`` itself (a wrapper of it does not count)."""
    return any(impl.plugin is plugin and not _is_wrapper(impl)
               for impl in getattr(manager.hook, hook_name).get_hookimpls())


def _modality_plugins(manager: pluggy.PluginManager) -> list[object]:
    """The registered plugins that provide a modality (answer ``medm2g_modality_spec``)."""
    return [impl.plugin for impl in manager.hook.medm2g_modality_spec.get_hookimpls() if not _is_wrapper(impl)]


def _owner_caller(manager: pluggy.PluginManager, hook_name: str, plugin: object) -> pluggy.HookCaller:
    """``hook_name`` as pluggy calls it with every modality plugin but ``plugin`` left out: the owner
    answers (``firstresult``), and wrappers from the plugins that remain wrap its answer."""
    others = [other for other in _modality_plugins(manager) if other is not plugin]
    return manager.subset_hook_caller(hook_name, remove_plugins=others)


def _check_unknown_hooks(manager: pluggy.PluginManager, sources: Mapping[int, PluginSource]) -> None:
    """Turn a misspelled hook (an implementation with no spec) into an error naming the plugin."""
    for name, caller in vars(manager.hook).items():
        if not name.startswith(f"{PROJECT_NAME}_") or caller.spec is not None:
            continue
        for impl in caller.get_hookimpls():
            if getattr(impl, "optionalhook", False):
                continue
            close = difflib.get_close_matches(name, MODALITY_HOOKS + BACKEND_HOOKS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PluginError(
                f"plugin {sources.get(id(impl.plugin), PluginSource(_plugin_name(impl.plugin)))}: "
                f"unknown hook {name!r}{hint}; known hooks: {', '.join(MODALITY_HOOKS + BACKEND_HOOKS)}"
            )
    manager.check_pending()  # anything pluggy itself still finds wrong


def _implemented_hooks(manager: pluggy.PluginManager, plugin: object) -> set[str]:
    return {caller.name for caller in manager.get_hookcallers(plugin) or ()}


def _collect_modalities(manager: pluggy.PluginManager, sources: Mapping[int, PluginSource]) -> list[Modality]:
    modalities: dict[str, Modality] = {}
    for plugin in _modality_plugins(manager):
        source = sources.get(id(plugin), PluginSource(_plugin_name(plugin)))
        spec = _call_spec_hook(manager, plugin, source)
        implemented = _implemented_hooks(manager, plugin)
        required = [
            h for h in MODALITY_HOOKS
            if h not in OPTIONAL_HOOKS and (spec.kind.is_imaging or h not in IMAGING_ONLY_HOOKS)
        ]
        missing = [h for h in required if h not in implemented]
        if missing:
            raise PluginError(
                f"plugin {source} provides modality {spec.name!r} but lacks required hook(s): {', '.join(missing)}"
            )
        if spec.name in modalities:
            raise PluginError(
                f"two plugins claim modality {spec.name!r}: {modalities[spec.name].source} and {source}; "
                "uninstall one of them or rename its modality"
            )
        modalities[spec.name] = Modality(spec=spec, source=source, plugin=plugin, manager=manager)
        logger.debug("loaded modality %s from %s", spec.name, source)
    return list(modalities.values())


def _call_spec_hook(manager: pluggy.PluginManager, plugin: object, source: PluginSource) -> ModalitySpec:
    try:
        spec = _owner_caller(manager, "medm2g_modality_spec", plugin)()
    except (ValueError, TypeError) as error:  # attrs validators and converters raise these
        raise PluginError(f"plugin {source}: medm2g_modality_spec returned an invalid spec: {error}") from error
    if not isinstance(spec, ModalitySpec):
        raise PluginError(
            f"plugin {source}: medm2g_modality_spec must return a ModalitySpec, got {type(spec).__name__}"
        )
    return spec


def _collect_backends(manager: pluggy.PluginManager, sources: Mapping[int, PluginSource]) -> dict[str, BackendSpec]:
    """Every plugin's ``medm2g_backends`` records, validated: records of the right type, unique names.
    The hook is called through the plugin manager, so hook wrappers around it take effect."""
    backends: dict[str, tuple[BackendSpec, PluginSource]] = {}
    answering = [impl for impl in manager.hook.medm2g_backends.get_hookimpls() if not _is_wrapper(impl)]
    for impl in answering:
        source = sources.get(id(impl.plugin), PluginSource(_plugin_name(impl.plugin)))
        try:
            records = manager.subset_hook_caller("medm2g_backends", remove_plugins=[
                other.plugin for other in answering if other is not impl])()
        except (ValueError, TypeError) as error:
            raise PluginError(f"plugin {source}: medm2g_backends returned an invalid backend: {error}") from error
        for returned in records:
            for record in returned or ():
                if not isinstance(record, BackendSpec):
                    raise PluginError(f"plugin {source}: medm2g_backends must return BackendSpec records, "
                                      f"got {type(record).__name__}")
                if record.name in backends:
                    raise PluginError(f"two plugins register backend {record.name!r}: {backends[record.name][1]} "
                                      f"and {source}; uninstall one of them or rename its backend")
                for kind in record.stage_runners:
                    owner = next((other for other, _ in backends.values() if kind in other.stage_runners), None)
                    if owner is not None:
                        raise PluginError(f"plugin {source}: backend {record.name!r} trains stage kind {kind!r}, "
                                          f"which backend {owner.name!r} already trains; name the kind after the backend")
                backends[record.name] = (record, source)
    return {name: record for name, (record, _) in backends.items()}
