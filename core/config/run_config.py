"""How a run trains: model size, shared-space width, per-stage hyperparameters, model overrides.

The pair graph says *what* is trained on which data; a run config says *how*.
Every field has a default, so a run needs no config file; a YAML file overrides
any subset (unknown keys are errors naming the file and the field), and
``medm2g config`` prints the full defaults to start from.

``models`` passes options to a modality's model factories, keyed by modality and
part, for example a timm backbone by name with weights from a local file, or a
local Hugging Face folder holding a radiology BERT::

    models:
      xray: {prompt_encoder: {backbone: resnet18, weights: /data/resnet18-xray.safetensors}}
      text: {prompt_encoder: {pretrained: /models/radiology-bert}}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Mapping

import attrs
import cattrs

from medm2g.core.config.prompting import PromptingConfig
from medm2g.core.config.syndiff import SynDiffConfig
from medm2g.core.config.vq_ar import VQArConfig
from medm2g.core.diffusion.attention import ATTENTION_BACKENDS
from medm2g.core.diffusion.cross_guidance import CrossGuidanceConfig
from medm2g.core.diffusion.schedule import DiffusionConfig
from medm2g.core.errors import ConfigError, PluginError
from medm2g.core.models.losses import BARLOW_TWINS_LAMBDA
from medm2g.core.optimisation import OptimiserSettings
from medm2g.core.structuring import (
    ECHO_LENGTH,
    at_least_two,
    non_negative,
    one_line,
    one_of,
    positive,
    read_yaml,
    shown,
    strict_converter,
    structure_or_explain,
)
from medm2g.registry import ModalityRegistry, ModalitySpec, ModelSize

logger = logging.getLogger("medm2g")


@attrs.frozen
class AlignmentConfig(OptimiserSettings):
    """Central alignment (eq. 3) with the medical visual invariant (eq. 4), per alignment stage.

    The loss of a stage is ``info_nce_weight * L_InfoNCE + visual_invariant_weight *
    sum over its trained imaging encoders of L_VI``; ``visual_invariant: false`` drops
    the second term (the paper's ablation). The InfoNCE temperature starts at
    ``temperature`` and is learned within [0.01, 1] unless ``learn_temperature`` is off.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {"steps": 150, "batch_size": 32, "learning_rate": 3e-4, "weight_decay": 1e-4,
                                          "warmup_steps": 10, "checkpoint_every": 50}

    temperature: float = attrs.field(default=0.07, validator=positive)
    learn_temperature: bool = True
    info_nce_weight: float = attrs.field(default=1.0, validator=non_negative)
    visual_invariant: bool = True
    visual_invariant_weight: float = attrs.field(default=0.5, validator=non_negative)
    lambda_offdiagonal: float = attrs.field(default=BARLOW_TWINS_LAMBDA, validator=non_negative)


@attrs.frozen
class VAEStageConfig(OptimiserSettings):
    """Per-modality VAE training. ``kl_weight`` is per modality kind's convention: imaging VAEs
    weigh a per-dimension KL (latent-diffusion style, tiny weight), the text VAE a summed KL.

    ``text_steps``: the text VAE's steps are cheap (0.15 s at the CPU size) and it needs many:
    on the phantom reports it decodes side and finding type back only after about 1500 steps
    (300 steps: generic reports; 1500: side 1.0, type 1.0, lobe 0.93 on 40 held-out reports)."""

    DEFAULTS: ClassVar[dict[str, Any]] = {"steps": 300, "batch_size": 16, "learning_rate": 1e-3, "weight_decay": 0.0,
                                          "warmup_steps": 10, "checkpoint_every": 100}

    text_steps: int = attrs.field(default=1500, validator=positive)
    image_kl_weight: float = attrs.field(default=1e-6, validator=non_negative)
    text_kl_weight: float = attrs.field(default=1e-3, validator=non_negative)
    scale_samples: int = attrs.field(default=256, validator=at_least_two)


@attrs.frozen
class LDMStageConfig(OptimiserSettings):
    """Single-modality latent diffusion (section 3.4: "we first train the individual LDM").

    The paper fine-tunes Stable Diffusion at 2e-5 (images) and Versatile Diffusion at 5e-5
    (text); these defaults train small denoisers from scratch, which wants more.
    ``learning_rate`` is the image denoisers', ``text_learning_rate`` the text diffuser's. The
    text diffuser's steps (``text_steps``) cost 0.06 s at the CPU size, a seventh of an image step.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {"steps": 400, "batch_size": 16, "learning_rate": 3e-4, "weight_decay": 0.0,
                                          "warmup_steps": 10, "checkpoint_every": 100}

    text_steps: int = attrs.field(default=2000, validator=positive)
    text_learning_rate: float = attrs.field(default=3e-4, validator=positive)


MIXED_PRECISION = ("no", "bf16", "fp16")


def _below_one(instance, attribute, value) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{attribute.name} must be in [0, 1), got {value}")


def _names(value) -> tuple[str, ...]:
    """A name or a list of names, as a tuple (``log_with: tensorboard`` or ``[tensorboard, wandb]``)."""
    return (value,) if isinstance(value, str) else tuple(str(name) for name in value)


@attrs.frozen
class AccelerationConfig:
    """How every training stage runs on Hugging Face accelerate (``accelerate launch``).

    A stage's ``batch_size`` is the batch of one optimizer step, whatever the hardware: the
    launched processes and ``gradient_accumulation_steps`` micro-batches share it out, and
    the per-sample random draws do not depend on the split, so those two only trade memory
    and speed. ``mixed_precision`` (``bf16``; ``fp16`` on CUDA with a gradient scaler) runs
    the steps under autocast with the frozen models stored in that precision; trained
    weights, optimizer state and checkpoints stay float32. ``gradient_checkpointing``
    recomputes activations in the backward pass (diffusers, transformers and timm models).
    ``ema_decay`` > 0 keeps an exponential moving average of each stage's trained
    parameters, warmed up as min(decay, (1 + k) / (10 + k)), and saves it as the stage's weights.
    ``skip_nonfinite_steps``: see below; 0 stops a stage at its first non-finite step.
    """

    mixed_precision: str = attrs.field(default="no", validator=one_of(MIXED_PRECISION))
    gradient_accumulation_steps: int = attrs.field(default=1, validator=positive)
    gradient_checkpointing: bool = False
    ema_decay: float = attrs.field(default=0.0, validator=_below_one)
    skip_nonfinite_steps: int = attrs.field(default=0, validator=non_negative)
    """How many steps of a stage with a non-finite loss or gradient are skipped (not applied) before
    the stage stops with a divergence error naming the step, as AMP's gradient scaler skips them."""
    log_with: tuple[str, ...] = attrs.field(default=("tensorboard",), converter=_names)
    """accelerate's experiment trackers every stage logs to (``RUN/logs``): tensorboard (the default),
    wandb, mlflow, ... where installed; ``[none]`` for no experiment log."""


def _optional_pair(value):
    return None if value is None else (float(value[0]), float(value[1]))


@attrs.frozen
class Grid:
    """A modality's working grid for this run, replacing its plugin's where a field is given:
    the image size its models see, the latent shape its VAE makes (the paper: 256x256 images,
    4x64x64 latents) and the intensity window mapped onto the models' [-1, 1].

    The window matters as much as the size: head CT in the plugin's (-1000, 1000) HU puts
    grey and white matter 0.005 apart, below what a small VAE reconstructs (L1 0.044 = 44 HU),
    so a head-CT run narrows it (``intensity_window: [-100, 200]``, bone saturates)."""

    image_size: tuple[int, int] | None = None
    latent_shape: tuple[int, int, int] | None = None
    intensity_window: tuple[float, float] | None = attrs.field(default=None, converter=_optional_pair)

    def spec_changes(self, spec: ModalitySpec) -> dict[str, Any]:
        """The ModalitySpec fields this grid replaces in ``spec``."""
        changes: dict[str, Any] = {}
        if self.image_size is not None:
            changes["image_size"] = self.image_size
        if self.latent_shape is not None:
            changes["latent_shape"] = self.latent_shape
        if self.intensity_window is not None:
            if spec.intensity is None or spec.intensity.per_sample:
                raise ValueError(f"intensity_window: {spec.name} has no absolute intensity unit to window")
            changes["intensity"] = spec.intensity.with_window(self.intensity_window)
        return changes


@attrs.frozen
class RunConfig:
    """Everything about a run that is not in the pair graph.

    ``embed_dim`` is the width of the shared space every C_M maps into. ``device``
    is ``auto`` (CUDA when present), ``cpu`` or a torch device string. ``attention`` is the
    denoisers' kernel: ``auto`` (xformers with CUDA when installed, else PyTorch SDPA),
    ``sdpa`` or ``xformers`` (falls back to SDPA, logged, where it cannot run). ``latent_cache``
    encodes each sample once with the frozen VAE and prompt encoder for the LDM stages and rounds
    (``RUN/cache/latents``) instead of at every step. ``acceleration``: processes, micro-batches,
    mixed precision, gradient checkpointing and EMA (see :class:`AccelerationConfig`).
    ``phantom_subjects`` sizes the phantom cohort generated for a shipped graph that
    has no data of its own (the embedded default data).
    """

    size: ModelSize = attrs.field(default=ModelSize.CPU, converter=ModelSize)
    embed_dim: int = attrs.field(default=256, validator=positive)
    seed: int = 0
    device: str = "auto"
    attention: str = attrs.field(default="auto", validator=one_of(ATTENTION_BACKENDS))
    phantom_subjects: int = attrs.field(default=600, validator=positive)
    latent_cache: bool = True
    acceleration: AccelerationConfig = AccelerationConfig()
    alignment: AlignmentConfig = AlignmentConfig()
    vae: VAEStageConfig = VAEStageConfig()
    ldm: LDMStageConfig = LDMStageConfig()
    cross_guidance: CrossGuidanceConfig = CrossGuidanceConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    syndiff: SynDiffConfig = SynDiffConfig()
    vq_ar: VQArConfig = VQArConfig()
    prompting: PromptingConfig = PromptingConfig()
    models: Mapping[str, Mapping[str, Mapping[str, Any]]] = attrs.field(factory=dict)
    grids: Mapping[str, Grid] = attrs.field(factory=dict)

    def modalities(self, registry: ModalityRegistry) -> ModalityRegistry:
        """The installed modalities as this run sees them: each spec on its plugin's grid for this
        run's ``size`` (``ModalitySpec.size_grids``), then with ``grids`` applied."""
        try:
            changes = {}
            for modality in registry:
                spec = registry[modality].spec
                sized = spec.at_size(self.size)
                changes[modality] = {field: getattr(sized, field) for field in ("image_size", "latent_shape")
                                     if getattr(sized, field) != getattr(spec, field)}
            for modality, grid in self.grids.items():
                spec = registry[modality].spec.at_size(self.size) if modality in registry else None
                try:
                    changes[modality] = {**changes.get(modality, {}),
                                         **(grid.spec_changes(spec) if spec is not None else {})}
                except ValueError as error:
                    raise PluginError(f"run config grids: {modality}: {error}") from None
            changes = {modality: fields for modality, fields in changes.items() if fields or modality in self.grids}
            return registry.with_spec_changes(changes, "run config grids") if changes else registry
        except PluginError as error:
            raise ConfigError(str(error)) from None

    def with_data_windows(self, windows: Mapping[str, tuple[float, float]]) -> "RunConfig":
        """This config with the data's intensity windows (a pair graph's ``intensity_windows``) as the
        grids' windows, except where ``grids`` already sets one: the run's own choice wins."""
        grids = dict(self.grids)
        for modality, window in windows.items():
            grid = grids.get(modality, Grid())
            if grid.intensity_window is None:
                grids[modality] = attrs.evolve(grid, intensity_window=window)
        return attrs.evolve(self, grids=grids) if grids != dict(self.grids) else self

    def model_options(self, modality: str, part: str) -> dict[str, Any]:
        return dict(self.models.get(modality, {}).get(part, {}))


MODEL_PARTS = ("prompt_encoder", "vae", "unet")
"""The model factories that take options from ``models`` (see the hooks' ``options`` argument)."""


def _key(key: Any) -> str:
    """A key as a message names it: its text, on one line, cut short."""
    return one_line(str(key), ECHO_LENGTH)


def _structure_models(value: Any, _type: Any) -> dict:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping modality -> part -> options, got {type(value).__name__}")
    models: dict = {}
    for modality, parts in value.items():
        if not isinstance(parts, Mapping):
            raise ValueError(f"{_key(modality)}: expected a mapping of parts ({', '.join(MODEL_PARTS)}), "
                             f"got {shown(parts)}")
        for part, options in parts.items():
            if part not in MODEL_PARTS:
                raise ValueError(f"{_key(modality)}.{_key(part)}: unknown model part (known: {', '.join(MODEL_PARTS)})")
            if not isinstance(options, Mapping):
                raise ValueError(f"{_key(modality)}.{_key(part)}: expected a mapping of options, got {shown(options)}")
        models[str(modality)] = {str(part): dict(options) for part, options in parts.items()}
    return models


def _make_converter() -> cattrs.Converter:
    converter = strict_converter()
    converter.register_structure_hook(ModelSize, lambda value, _t: ModelSize(value))
    converter.register_structure_hook_func(
        lambda t: t == Mapping[str, Mapping[str, Mapping[str, Any]]], _structure_models
    )
    return converter


CONVERTER = _make_converter()


RENAMED_FIELDS = {("ldm", "image_learning_rate"): "learning_rate"}
"""Fields read under their old names (run folders and configs written before the rename)."""


def _renamed(data: Mapping, source: str) -> dict:
    data = dict(data)
    for (section, old), new in RENAMED_FIELDS.items():
        fields = data.get(section)
        if isinstance(fields, Mapping) and old in fields:
            if new in fields:
                raise ConfigError(f"{source}: {section}: {old} is the old name of {new}; give only {new}")
            logger.warning("%s: %s.%s is now %s.%s", source, section, old, section, new)
            data[section] = {(new if key == old else key): value for key, value in fields.items()}
    return data


def structure_run_config(data: Any, source: str = "<memory>") -> RunConfig:
    if data is None:
        return RunConfig()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of run settings, got {type(data).__name__}")
    return structure_or_explain(CONVERTER, _renamed(data, source), RunConfig, source, ConfigError)


PRESETS_DIR = Path(__file__).parent / "presets"
"""Run configs shipped with medm2g, usable by name: ``--config paper``."""


def resolve_run_config_path(argument: Path | str) -> Path:
    """A run config file as given, or else the name of a shipped preset (``paper``)."""
    path = Path(argument)
    if path.is_file():  # a folder of that name (a run called "ablation", say) is not a config
        return path
    for name in (path.name, f"{path.name}.yaml"):
        if (PRESETS_DIR / name).is_file():
            return PRESETS_DIR / name
    presets = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
    raise ConfigError(f"{argument}: no such run config file (presets shipped with medm2g: {presets})")


def load_run_config(path: Path | str | None) -> RunConfig:
    """The defaults, overridden by the YAML file at ``path`` (or the preset of that name) when one is given."""
    if path is None:
        return RunConfig()
    path = resolve_run_config_path(path)
    return structure_run_config(read_yaml(path, "run config", ConfigError), str(path))


def run_config_to_dict(config: RunConfig) -> dict:
    """Plain data (for records and ``medm2g config``) that :func:`structure_run_config` reads back."""
    data = CONVERTER.unstructure(config)
    data["size"] = config.size.value
    return data


def with_overrides(config: RunConfig, **changes: Any) -> RunConfig:
    """A copy with dotted fields replaced (``alignment.steps=10``), for command-line flags."""
    data = run_config_to_dict(config)
    for dotted, value in changes.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        target = data
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return structure_run_config(data, "command line")
