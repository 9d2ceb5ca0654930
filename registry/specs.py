"""The typed records a modality plugin returns.

A :class:`ModalitySpec` is everything modality-agnostic code may know about a
modality: what kind of data it is, the grid its models work on, the latent shape
its VAE produces and how intensities map to model space. Validators run when the
record is built, so a bad spec fails inside the plugin that made it and the
plugin manager can name that plugin.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

import attrs

MODALITY_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
"""Modality names are lowercase identifiers: they key dicts, YAML and file names."""

TEXT_LATENT_SHAPE = (768, 1, 1)
"""The paper's text latent: an Optimus-style VAE's 768-wide vector as a 768x1x1 map."""


class ModalityKind(str, enum.Enum):
    """What a modality's samples are; the only thing core code may branch on.

    ``image`` is a 2D acquisition (an X-ray projection); ``volume`` a 3D one (CT, MRI)
    whose models work slice-wise on the 2D ``image_size`` grid, as the paper's
    CT and MRI generators do; ``text`` a report.
    """

    IMAGE = "image"
    VOLUME = "volume"
    TEXT = "text"

    @property
    def is_imaging(self) -> bool:
        return self is not ModalityKind.TEXT


class ModelSize(str, enum.Enum):
    """Named model sizes every plugin supplies configs for.

    ``tiny`` builds in well under a second for tests, ``cpu`` is the default that
    trains on a 2-core machine, ``paper`` matches the paper (4x64x64 image latents).
    """

    TINY = "tiny"
    CPU = "cpu"
    PAPER = "paper"


def _optional_int_tuple(value):
    return None if value is None else tuple(int(v) for v in value)


def _check_name(instance, attribute, value: str) -> None:
    if not isinstance(value, str) or not MODALITY_NAME_PATTERN.match(value):
        raise ValueError(
            f"{attribute.name} must be a lowercase identifier matching "
            f"{MODALITY_NAME_PATTERN.pattern!r}, got {value!r}"
        )


def _positive_ints(instance, attribute, value: tuple[int, ...] | None) -> None:
    if value is None:
        return
    if not value or any((not isinstance(v, int)) or v <= 0 for v in value):
        raise ValueError(f"{attribute.name} must be a non-empty tuple of positive ints, got {value!r}")


def _named_windows(value) -> tuple[tuple[str, tuple[float, float]], ...]:
    """``{"brain": (0, 80), ...}`` (or its pairs) as hashable ((name, (low, high)), ...), each ordered."""
    pairs = tuple(value.items()) if isinstance(value, Mapping) else tuple(value)
    windows = tuple((str(name), (float(window[0]), float(window[1]))) for name, window in pairs)
    for name, (low, high) in windows:
        if not low < high:
            raise ValueError(f"display_presets[{name!r}] must be (low, high) with low < high, got {(low, high)!r}")
    return windows


@attrs.frozen
class IntensityConvention:
    """How stored intensities map to the model's [-1, 1] range.

    ``window`` is the (low, high) range in ``unit`` mapped linearly onto [-1, 1]
    and clipped, e.g. (-1000, 1000) HU for CT. ``per_sample`` marks units without
    an absolute scale (MRI signal), where each sample is normalised by its own
    percentiles ``window`` (in percent) instead.
    """

    unit: str
    window: tuple[float, float] = attrs.field(converter=lambda w: (float(w[0]), float(w[1])))
    per_sample: bool = False
    description: str = ""
    display_window: tuple[float, float] | None = attrs.field(
        default=None, converter=lambda w: None if w is None else (float(w[0]), float(w[1]))
    )
    display_presets: tuple[tuple[str, tuple[float, float]], ...] = attrs.field(default=(), converter=_named_windows)
    """Named windows a reader switches between (CT: brain, subdural, bone), in ``unit``; pictures
    offer them, models never see them. A preset may reach past ``window``: what lies beyond is shown
    saturated, as the model cannot hold it."""

    @window.validator
    def _window_ordered(self, attribute, value) -> None:
        if not value[0] < value[1]:
            raise ValueError(f"window must be (low, high) with low < high, got {value!r}")

    @display_window.validator
    def _display_inside(self, attribute, value) -> None:
        """The window a person reads images in (a CT brain window); pictures use it, models do not."""
        if value is None:
            return
        if self.per_sample or not (self.window[0] <= value[0] < value[1] <= self.window[1]):
            raise ValueError(f"display_window {value!r} must be an ordered sub-range of window {self.window!r}")

    def with_window(self, window: tuple[float, float]) -> "IntensityConvention":
        """This convention mapping ``window`` onto [-1, 1] instead; the display window is kept
        where it still fits inside and dropped (whole range shown) where it does not."""
        window = (float(window[0]), float(window[1]))
        display = self.display_window
        inside = display is not None and window[0] <= display[0] and display[1] <= window[1]
        return attrs.evolve(self, window=window, display_window=display if inside else None)

    def display_range(self, preset: str | None = None) -> tuple[float, float]:
        """The model-space (low, high) to show images in: the display window (or the named
        ``preset`` of :attr:`display_presets`) mapped into [-1, 1]."""
        shown = self.display_window
        if preset is not None:
            presets = dict(self.display_presets)
            if preset not in presets:
                raise ValueError(f"unknown display window {preset!r} for {self.unit} images "
                                 f"(named windows: {', '.join(presets) or 'none'})")
            shown = presets[preset]
        if shown is None:
            return (-1.0, 1.0)
        low, high = self.window
        return tuple(2 * (v - low) / (high - low) - 1 for v in shown)


@attrs.frozen
class SizeGrid:
    """The grid a modality's models work on at one :class:`ModelSize`, where it differs from the
    spec's own (the paper's 256x256 images and 4x64x64 latents at ``paper``, say)."""

    size: ModelSize = attrs.field(converter=ModelSize)
    image_size: tuple[int, ...] | None = attrs.field(default=None, converter=_optional_int_tuple,
                                                     validator=_positive_ints)
    latent_shape: tuple[int, ...] | None = attrs.field(default=None, converter=_optional_int_tuple,
                                                       validator=_positive_ints)

    def changes(self) -> dict:
        return {name: value for name, value in (("image_size", self.image_size), ("latent_shape", self.latent_shape))
                if value is not None}


def _size_grids(value) -> tuple[SizeGrid, ...]:
    """``{"paper": {"image_size": (256, 256), "latent_shape": (4, 64, 64)}}`` (or SizeGrid records)."""
    if isinstance(value, dict):
        value = [SizeGrid(size, **fields) for size, fields in value.items()]
    grids = tuple(value)
    sizes = [grid.size for grid in grids]
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"size_grids names a size twice: {[s.value for s in sizes]}")
    return grids


@attrs.frozen
class ModalitySpec:
    """What one modality is, as far as modality-agnostic code is concerned.

    ``image_size`` (H, W) is the 2D grid the VAE and UNet work on; ``latent_shape``
    is the (C, H, W) the VAE maps a sample to. Text has no grid or channels and
    uses :data:`TEXT_LATENT_SHAPE`-style (width, 1, 1) latents.
    """

    name: str = attrs.field(validator=_check_name)
    kind: ModalityKind = attrs.field(converter=ModalityKind)
    description: str
    latent_shape: tuple[int, ...] = attrs.field(converter=_optional_int_tuple, validator=_positive_ints)
    channels: int | None = None
    image_size: tuple[int, ...] | None = attrs.field(
        default=None, converter=_optional_int_tuple, validator=_positive_ints
    )
    intensity: IntensityConvention | None = None
    file_suffixes: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    dicom_modalities: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """DICOM Modality values (0008,0060) this modality reads, e.g. ("CT",); empty reads any."""
    size_grids: tuple[SizeGrid, ...] = attrs.field(default=(), converter=_size_grids)
    """This modality's grid per model size where it differs from ``image_size``/``latent_shape``:
    ``{"paper": {"image_size": (256, 256), "latent_shape": (4, 64, 64)}}``. A run at that size
    (``--size paper``) works on that grid; a run config's ``grids`` may still override it."""

    def at_size(self, size: "ModelSize | str") -> "ModalitySpec":
        """The spec as a run of ``size`` sees it (validators run again on the new grid)."""
        size = ModelSize(size)
        for grid in self.size_grids:
            if grid.size is size and grid.changes():
                return attrs.evolve(self, **grid.changes())
        return self

    def __attrs_post_init__(self) -> None:
        if len(self.latent_shape) != 3:
            raise ValueError(f"latent_shape must be (channels, height, width), got {self.latent_shape!r}")
        if self.kind.is_imaging:
            self._check_imaging()
        else:
            self._check_text()
        bad = [s for s in self.file_suffixes if not s.startswith(".") or s != s.lower()]
        if bad:
            raise ValueError(f"file_suffixes must be lowercase and start with '.', got {bad!r}")

    def _check_imaging(self) -> None:
        if self.channels is None or self.channels < 1:
            raise ValueError(f"an {self.kind.value} modality needs channels >= 1, got {self.channels!r}")
        if self.image_size is None or len(self.image_size) != 2:
            raise ValueError(f"image_size must be (height, width) for an {self.kind.value} modality, got {self.image_size!r}")
        if self.intensity is None:
            raise ValueError(f"an {self.kind.value} modality needs an intensity convention")
        for axis, (size, latent) in enumerate(zip(self.image_size, self.latent_shape[1:])):
            factor = size // latent if latent else 0
            if latent * factor != size or factor & (factor - 1):
                raise ValueError(
                    f"latent_shape {self.latent_shape!r} must downsample image_size {self.image_size!r} "
                    f"by a power of two on every axis (axis {axis}: {size} -> {latent})"
                )

    def _check_text(self) -> None:
        if self.channels is not None or self.image_size is not None:
            raise ValueError("a text modality has no channels or image_size; leave them unset")
        if self.latent_shape[1:] != (1, 1):
            raise ValueError(f"a text latent is (width, 1, 1), got {self.latent_shape!r}")

    @property
    def downsample_factor(self) -> int:
        """How many pixels one latent cell covers along each axis (1 for text)."""
        if self.image_size is None:
            return 1
        return self.image_size[0] // self.latent_shape[1]

    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one model-space sample: (C, H, W) for imaging, () for text."""
        if self.image_size is None:
            return ()
        return (self.channels, *self.image_size)


@attrs.frozen
class PhantomRendering:
    """What a modality makes of one phantom subject.

    ``samples`` maps variant names to model-space samples (MRI: ``t1``, ``t2``, ``pd``); the
    first variant is the modality's default. ``lesion_mask`` is 1 where the finding is, in
    the geometry of the samples ((D, 1, H, W) for a volume, (1, H, W) for an image), or
    None for text and for subjects without a finding.
    """

    samples: dict = attrs.field(converter=dict)
    lesion_mask: object = None

    @samples.validator
    def _not_empty(self, attribute, value) -> None:
        if not value:
            raise ValueError("a phantom rendering needs at least one sample")


BACKEND_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(-[a-z0-9_]+)*$")
"""A backend's name: a lowercase identifier, hyphens allowed between words (``vq-ar``)."""


def _backend_name(instance, attribute, value) -> None:
    if not isinstance(value, str) or not BACKEND_NAME_PATTERN.match(value):
        raise ValueError(f"{attribute.name} must be a lowercase name (letters, digits, _ and - between words), "
                         f"got {value!r}")


@attrs.frozen
class BackendSpec:
    """One generation backend, as a plugin registers it through ``medm2g_backends``.

    A backend trains the stages the graph engine plans for its edges (one stage of kind
    ``edge_stage_kind`` per edge naming the backend) and answers
    generation requests for a trained run. ``stage_runners`` maps a stage kind (the
    value a plan's stage carries, ``"vae"``, ``"adversarial_diffusion"``, ...) to a
    function ``runner(plan, stage, registry, config, layout, engine) -> record`` that
    trains (or resumes) that stage and returns its record. ``generator`` builds the
    backend's answer to ``medm2g generate`` from a trained run: any object with
    ``generate(request)`` and ``describe(request)``
    (:class:`medm2g.core.generation.backends.GenerationBackend`).
    """

    name: str = attrs.field(validator=_backend_name)
    description: str
    stage_runners: dict = attrs.field(factory=dict, converter=dict)
    generator: object = None
    edge_stage_kind: str | None = None
    """The stage kind the graph engine plans once per pair-graph edge with ``backend: NAME``
    (SynDiff: ``adversarial_diffusion``); None for MedM2G's own, whose edges form the star."""
    evaluator: object = None
    """``evaluator(run, plan, manifest, subjects, folder) -> {name: path}``: what ``medm2g eval`` measures
    of the backend's trained edges beyond the generation table (vq-ar: its codebook and alignment),
    written into ``folder``; None for nothing more."""
    edge_modalities: str = attrs.field(default="images", validator=attrs.validators.in_(("images", "report-image")))
    """What its edges join: ``images`` (two imaging modalities, translated both ways) or
    ``report-image`` (a report modality and an imaging one, the image generated from the report)."""

    @stage_runners.validator
    def _callables(self, attribute, value) -> None:
        for kind, runner in value.items():
            if not isinstance(kind, str) or not callable(runner):
                raise ValueError(f"stage_runners must map stage kind names to functions, got {kind!r}: {runner!r}")
