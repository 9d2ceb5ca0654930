"""Hook specifications: what a modality plugin must (and may) supply.

A modality plugin is one module or object registered under the ``medm2g``
entry-point group. It implements :func:`medm2g_modality_spec` and the other
*modality hooks* below; the plugin manager calls each of them through pluggy with
every other modality's plugin left out (never broadcast), so a plugin never checks
which modality it is asked about, while hook wrappers (``@hookimpl(wrapper=True)``)
from other plugins still wrap the call. Mark implementations with
:data:`medm2g.registry.hookimpl`.

The models the building hooks return are ``torch.nn.Module`` s satisfying the protocols
of :mod:`medm2g.registry.protocols` (:class:`~medm2g.registry.protocols.PromptEncoder`,
:class:`~medm2g.registry.protocols.LatentVAE`, :class:`~medm2g.registry.protocols.Denoiser`);
:mod:`medm2g.registry.conformance` calls every method of them.

Every sample crosses these hooks in *model space*: imaging samples are float
tensors (C, H, W) on the spec's ``image_size`` grid with intensities in [-1, 1]
(a volume is a stack (D, C, H, W) of such slices); text samples are ``str``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import pluggy

from medm2g.registry.specs import BackendSpec, ModalitySpec, ModelSize, PhantomRendering

if TYPE_CHECKING:  # torch is heavy; hook signatures only name its types.
    import torch

    from medm2g.core.io.provenance import Provenance
    from medm2g.core.phantom.anatomy import PhantomSubject
    from medm2g.core.prompting.vocabulary import Vocabulary

PROJECT_NAME = "medm2g"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)

Augmentation = Callable[["torch.Tensor", "torch.Generator"], "torch.Tensor"]
"""One random view (B, C, H, W) -> (B, C, H, W), drawn from the generator; medm2g calls it per
sample, with B = 1 and that sample's own generator."""


@hookspec(firstresult=True)
def medm2g_modality_spec() -> ModalitySpec:
    """Say which modality this plugin provides.

    Called once when the plugin is loaded; the name must be unique across all
    installed plugins. Required.

    Example::

        @hookimpl
        def medm2g_modality_spec():
            return ModalitySpec(name="pet", kind="volume", description="FDG PET",
                                channels=1, image_size=(64, 64), latent_shape=(4, 16, 16),
                                intensity=IntensityConvention(unit="SUV", window=(0, 10)))
    """


@hookspec(firstresult=True)
def medm2g_prompt_encoder(
    spec: ModalitySpec, size: ModelSize, embed_dim: int, options: Mapping[str, Any]
) -> "torch.nn.Module":
    """Build the modality's prompt encoder C_M (paper, section 3.2).

    Called when a stage needs the encoder. Return a fresh ``nn.Module`` whose
    ``forward(batch)`` maps a batch of model-space samples (a tensor (B, C, H, W),
    or a list of ``str`` for text) to embeddings of shape (B, embed_dim) in the
    shared space (:class:`~medm2g.registry.protocols.PromptEncoder`). Required.

    ``options`` comes from the run config's ``models.<modality>.prompt_encoder``
    (``{}`` by default): overrides of the size's config, such as a backbone name or
    a local weights file. Raise :class:`~medm2g.core.errors.PluginError` naming
    any option you do not know; omit the argument if you take none.

    Example::

        @hookimpl
        def medm2g_prompt_encoder(spec, size, embed_dim):
            return ImagePromptEncoder(ImageEncoderConfig.for_size(size), spec.channels, embed_dim)
    """


@hookspec(firstresult=True)
def medm2g_vae(spec: ModalitySpec, size: ModelSize, options: Mapping[str, Any]) -> "torch.nn.Module":
    """Build the modality's VAE.

    Called when the VAE stage trains it and whenever samples are encoded to or
    decoded from latents. Return an ``nn.Module`` satisfying
    :class:`~medm2g.registry.protocols.LatentVAE`: ``encode(batch, generator=None)`` -> scaled
    latents (B, *spec.latent_shape) and ``decode(latents) -> batch`` inverting it, its own
    ``training_loss(batch, generator, kl_weight) -> (loss, logs)`` (a scalar tensor and a dict
    of floats) for the VAE stage, and ``scaling_factor`` / ``set_scaling_factor(value)`` (the
    latent scale the VAE stage calibrates from data). Optionally ``posterior(batch) -> (mean,
    logvar)`` with ``sample_latents(mean, logvar, generator)`` (then the latent cache encodes
    each sample once and draws each sample's latent with its own generator;
    :class:`~medm2g.registry.protocols.PosteriorSampler`) and ``export_pretrained(folder)``.
    Image modalities wrap a diffusers ``AutoencoderKL``; text uses an Optimus-shaped
    BERT-encoder/GPT-2-decoder VAE. Required.

    ``options`` comes from the run config's ``models.<modality>.vae`` (``{}`` by default), such as
    ``pretrained: FOLDER`` (a local Stable Diffusion folder for the built-in imaging plugins);
    omit the argument if you take none. A VAE whose latent scale came with its pretrained weights
    says so with a true ``keeps_pretrained_scale`` attribute: the VAE stage then keeps that scale.

    Example::

        @hookimpl
        def medm2g_vae(spec, size):
            return ImageVAE.from_spec(spec, size)
    """


@hookspec(firstresult=True)
def medm2g_unet(spec: ModalitySpec, size: ModelSize, context_dim: int, options: Mapping[str, Any]) -> "torch.nn.Module":
    """Build the modality's denoiser (the "UNet" of its latent diffusion model).

    Called by the single-modality LDM stage, the cross-guided rounds and sampling. Return an
    ``nn.Module`` (:class:`~medm2g.registry.protocols.Denoiser`) whose
    ``forward(latents, timesteps, context, guidance=None)`` takes noisy latents
    (B, *spec.latent_shape), integer timesteps (B,) and a cross-attention context
    (B, L, context_dim), and returns the noise prediction with the shape of ``latents``.
    medm2g passes L = 1: the condition's prompt embedding as one token (zeros for the null
    condition); accept any L. Build the cross-attention from diffusers ``Attention`` blocks
    and pass ``guidance`` (B, N, guidance_dim), when it is not None, to them as
    ``cross_attention_kwargs={"guidance": guidance}``: the multi-flow rounds attach the
    sub-layers theta_c there (``attach_cross_guidance``, eq. 6). Required.

    ``options`` comes from the run config's ``models.<modality>.unet`` (``{}`` by default), such as
    ``pretrained: FOLDER``; omit the argument if you take none.

    Example::

        @hookimpl
        def medm2g_unet(spec, size, context_dim):
            return ImageDenoiser.from_spec(spec, size, context_dim)
    """


@hookspec(firstresult=True)
def medm2g_augmentation(spec: ModalitySpec) -> Augmentation:
    """Return the random view maker used by the medical visual invariant (section 3.3).

    Called for imaging modalities when the alignment stage starts; the returned callable
    is then called twice per *sample* (not per batch), each time on a batch of one
    (1, C, H, W) with that sample's own generator, to make the two views the Barlow
    Twins loss compares (a volume's sample is one slice). It must draw all randomness
    from the generator it is given so views are reproducible under a seed (and the same
    on any number of processes), and keep what is clinically meaningful (an X-ray
    augmentation should not flip left and right). Required for ``image`` and ``volume``
    modalities, not called for text.

    Example::

        @hookimpl
        def medm2g_augmentation(spec):
            return Compose([IntensityJitter(0.1), SmallAffine(degrees=5), GaussianNoise(0.02)])
    """


@hookspec(firstresult=True)
def medm2g_read(spec: ModalitySpec, path: Path) -> "torch.Tensor | str":
    """Read one file into model space.

    Called for every file a manifest or a command line names. Return a tensor
    (C, H, W) for ``image``, (D, C, H, W) for ``volume``, or ``str`` for ``text``.
    Raise :class:`medm2g.core.errors.DataError` naming the file and the reason when
    the file cannot be used. Required.

    Example::

        @hookimpl
        def medm2g_read(spec, path):
            return read_image(path, spec)
    """


@hookspec(firstresult=True)
def medm2g_write(
    spec: ModalitySpec, sample: "torch.Tensor | str", path: Path, provenance: "Provenance | None"
) -> Path:
    """Write one model-space sample to ``path`` and return the path written.

    Called for every generated sample the user asks to save. The inverse of
    :func:`medm2g_read`; the suffix of ``path`` picks the format among the spec's
    ``file_suffixes``. Embed ``provenance`` (what generated the sample) where the format
    has room, so the file says it is synthetic; ``medm2g.core.io.imaging`` and
    ``medm2g.core.io.provenance`` do this for the common formats. A volume written as DICOM
    may become a series folder: return what was written. Required.

    Example::

        @hookimpl
        def medm2g_write(spec, sample, path, provenance):
            return write_imaging(sample, path, spec, provenance)
    """


@hookspec(firstresult=True)
def medm2g_phantom_render(
    spec: ModalitySpec, subject: "PhantomSubject", generator: "torch.Generator"
) -> PhantomRendering | None:
    """Render one subject of the phantom cohort (the embedded default data) in this modality.

    Called by ``medm2g data phantom --graph GRAPH`` (and by ``medm2g train`` on a shipped
    graph without data) once per subject for every modality of the graph, which must all
    implement it. ``subject.fractions(grid)`` gives tissue fractions on any grid in
    millimetres (``SamplingGrid`` in :mod:`medm2g.core.phantom.anatomy`) and
    ``subject.finding`` the ground truth; turn them into model-space samples with this
    modality's physics (``property_map``, ``lesion_value``, ``lesion_mask`` in
    :mod:`medm2g.core.phantom.physics`), drawing noise from ``generator``. The cohort
    writes each sample with :func:`medm2g_write` as ``.png`` (image), ``.nii.gz`` (volume)
    or ``.txt`` (text). Return the samples by variant
    name (the first is the default the manifests use) and, for imaging modalities, the
    lesion mask in the sample's geometry. Optional: a modality that does not implement
    it, or returns None, is absent from the phantom cohort.

    Example::

        @hookimpl
        def medm2g_phantom_render(spec, subject, generator):
            fractions = subject.fractions(SamplingGrid.regular(spec.image_size, 16, SLICE_BAND_Z))
            suv = torch.einsum("k,kdhw->dhw", UPTAKE, fractions)
            return PhantomRendering({"suv": to_model_space(suv)}, lesion_mask(fractions))
    """


@hookspec(firstresult=True)
def medm2g_vocabularies(spec: ModalitySpec) -> "list[Path]":
    """Declare the modality's anatomy and pathology vocabularies: YAML files of canonical terms
    with their synonyms (``name``, ``description``, ``anatomy``, ``pathology``; the format of
    :mod:`medm2g.core.prompting.vocabulary`).

    Called when anatomy-pathology prompting needs a vocabulary (``medm2g prompt``); the files are
    read then, and a broken one is an error naming the file and the field. Optional: a modality
    without vocabularies returns nothing or does not implement it. The text plugin ships a head
    vocabulary (the phantom cohort's terms) and a chest one (MIMIC-CXR's observations).

    Example::

        @hookimpl
        def medm2g_vocabularies(spec):
            return [Path(__file__).parent / "vocabularies" / "pet.yaml"]
    """


@hookspec
def medm2g_backends() -> "list[BackendSpec]":
    """Register generation backends: what trains a pair-graph edge's stages and answers requests.

    Called once when plugins load, on every plugin that implements it; the results of
    all plugins are collected (no ``firstresult``), so one package may register several
    backends. Names must be unique across installed plugins: the manager names both
    sources of a duplicate. MedM2G's own backend (``medm2g``) and SynDiff (``syndiff``)
    register through this hook exactly as a third-party one does. Optional.

    Example::

        @hookimpl
        def medm2g_backends():
            return [BackendSpec(name="pix2pix", description="paired L1 translation",
                                stage_runners={"regression": run_regression_stage},
                                generator=RegressionTranslator, edge_stage_kind="regression")]
    """


@hookspec
def medm2g_prompt_generators() -> "dict[str, Callable[[str, Vocabulary], str]]":
    """Register anatomy-pathology prompt writers by name: ``writer(report, vocabulary) -> prompt``.

    Called when a prompt is written with a writer other than the built-in grammar
    (``medm2g prompt --generator NAME``, the run config's ``prompting.generator``); the results of
    all plugins are collected, and a name used twice (or ``grammar``) is an error. Every prompt a
    writer returns is checked against the vocabulary: one with a word outside it is refused,
    naming the word, never passed on. A folder holding a local language model needs no plugin:
    give its path instead of a name. Optional.

    Example::

        @hookimpl
        def medm2g_prompt_generators():
            return {"my-llm": lambda report, vocabulary: my_model.rewrite(report, vocabulary.canonical("pathology"))}
    """


MODALITY_HOOKS: tuple[str, ...] = (
    "medm2g_modality_spec",
    "medm2g_prompt_encoder",
    "medm2g_vae",
    "medm2g_unet",
    "medm2g_augmentation",
    "medm2g_read",
    "medm2g_write",
    "medm2g_phantom_render",
    "medm2g_vocabularies",
)
"""Every hook a modality plugin may implement, in the order the docs list them."""

BACKEND_HOOKS: tuple[str, ...] = ("medm2g_backends", "medm2g_prompt_generators")
"""Hooks for the whole project rather than one modality (generation backends, prompt writers); a plugin
may implement modality hooks, these, or both."""

IMAGING_ONLY_HOOKS: frozenset[str] = frozenset({"medm2g_augmentation"})
"""Hooks required only of imaging (``image``/``volume``) modalities."""

OPTIONAL_HOOKS: frozenset[str] = frozenset({"medm2g_phantom_render", "medm2g_vocabularies"})
"""Hooks a modality may leave out."""
