"""Load, validate and look up modality plugins.

There is no global plugin manager: :func:`load_modalities` builds a fresh one
each time, so tests can register extra plugins for the length of one test and
nothing is imported as a side effect of importing medm2g.
"""

from __future__ import annotations

import difflib
import importlib.metadata
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
        caller = getattr(self._manager.hook, hook_name)
        for impl in caller.get_hookimpls():
            if impl.plugin is self._plugin:
                return impl.function(*(kwargs[arg] for arg in impl.argnames))
        raise PluginError(f"plugin {self.source} does not implement {hook_name} for modality {self.name!r}")

    def prompt_encoder(self, size: ModelSize | str, embed_dim: int, options: Mapping[str, Any] | None = None):
        """C_M: a fresh prompt encoder mapping a batch to (B, embed_dim); ``options`` override its config."""
        return self._call("medm2g_prompt_encoder", spec=self.spec, size=ModelSize(size), embed_dim=embed_dim,
                          options=dict(options or {}))

    def vae(self, size: ModelSize | str):
        """A fresh VAE mapping a batch to (B, *spec.latent_shape) and back."""
        return self._call("medm2g_vae", spec=self.spec, size=ModelSize(size))

    def unet(self, size: ModelSize | str, context_dim: int):
        """A fresh denoiser predicting noise from (latents, timesteps, context)."""
        return self._call("medm2g_unet", spec=self.spec, size=ModelSize(size), context_dim=context_dim)

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

    def phantom_render(self, subject, generator) -> PhantomRendering | None:
        """Render one phantom subject, or None when this modality takes no part in the cohort."""
        implemented = self._manager.hook.medm2g_phantom_render.get_hookimpls()
        if not any(impl.plugin is self._plugin for impl in implemented):
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
    sources: dict[int, PluginSource] = {}
    if entry_points:
        for plugin, source in _load_entry_points():
            _register(manager, plugin, source)
            sources[id(plugin)] = source
    for plugin in extra_plugins:
        source = PluginSource(_plugin_name(plugin))
        _register(manager, plugin, source)
        sources[id(plugin)] = source
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
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _register(manager: pluggy.PluginManager, plugin: object, source: PluginSource) -> None:
    if manager.is_registered(plugin):
        return
    try:
        manager.register(plugin, name=f"{source.plugin_name}@{id(plugin)}")
    except pluggy.PluginValidationError as error:
        # pluggy's message spans lines and names the plugin by our internal key; keep one line
        detail = "; ".join(line.strip() for line in str(error).splitlines()[1:] if line.strip())
        raise PluginError(f"plugin {source}: {detail}") from error


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
    for impl in manager.hook.medm2g_modality_spec.get_hookimpls():
        plugin = impl.plugin
        source = sources.get(id(plugin), PluginSource(_plugin_name(plugin)))
        spec = _call_spec_hook(impl, source)
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


def _call_spec_hook(impl: pluggy.HookImpl, source: PluginSource) -> ModalitySpec:
    try:
        spec = impl.function()
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
    for impl in manager.hook.medm2g_backends.get_hookimpls():
        source = sources.get(id(impl.plugin), PluginSource(_plugin_name(impl.plugin)))
        try:
            records = manager.subset_hook_caller("medm2g_backends", remove_plugins=[
                other.plugin for other in manager.hook.medm2g_backends.get_hookimpls() if other is not impl])()
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
                backends[record.name] = (record, source)
    return {name: record for name, (record, _) in backends.items()}
