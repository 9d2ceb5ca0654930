"""The text modality plugin: radiology reports.

C_text is a BERT-style encoder, the VAE has the Optimus shape (BERT encoder,
GPT-2 decoder, 768-wide latent as in the paper) and the diffuser is a stack of
fully connected residual blocks. All are built from the configs below with the
WordPiece vocabulary shipped beside this file, so nothing is downloaded.
"""

from __future__ import annotations

import importlib.resources
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import attrs

from medm2g.core.errors import DataError, PluginError
from medm2g.core.io.dicom_read import is_dicom_file
from medm2g.core.io.provenance import sidecar_path
from medm2g.core.models.options import apply_options
from medm2g.plugins.text.models.diffuser import TextDiffuser, TextDiffuserConfig
from medm2g.plugins.text.models.encoder import TextEncoderConfig, TextPromptEncoder
from medm2g.plugins.text.models.tokenizer import load_tokenizer
from medm2g.plugins.text.models.vae import TextVAE, TextVAEConfig
from medm2g.plugins.text.phantom import render as render_phantom
from medm2g.plugins.text.structured_report import read_structured_report
from medm2g.registry import TEXT_LATENT_SHAPE, ModalitySpec, ModelSize, PhantomRendering, hookimpl

SPEC = ModalitySpec(
    name="text",
    kind="text",
    description="Radiology report text",
    latent_shape=TEXT_LATENT_SHAPE,
    file_suffixes=(".txt", ".dcm"),
    dicom_modalities=("SR",),
)

ENCODERS = {
    ModelSize.TINY: TextEncoderConfig(hidden_size=32, layers=1, heads=2, max_length=64),
    ModelSize.CPU: TextEncoderConfig(hidden_size=128, layers=2, heads=4, max_length=128),
    ModelSize.PAPER: TextEncoderConfig(hidden_size=768, layers=12, heads=12, max_length=512),
}
VAES = {
    ModelSize.TINY: TextVAEConfig(latent_dim=TEXT_LATENT_SHAPE[0], hidden_size=32, layers=1, heads=2, max_length=48),
    ModelSize.CPU: TextVAEConfig(latent_dim=TEXT_LATENT_SHAPE[0], hidden_size=128, layers=2, heads=4, max_length=96),
    ModelSize.PAPER: TextVAEConfig(latent_dim=TEXT_LATENT_SHAPE[0], hidden_size=768, layers=12, heads=12, max_length=256),
}
DIFFUSERS = {
    ModelSize.TINY: TextDiffuserConfig(width=64, depth=1, heads=2),
    ModelSize.CPU: TextDiffuserConfig(width=256, depth=2, heads=4),
    ModelSize.PAPER: TextDiffuserConfig(width=1024, depth=2, heads=8),
}


@lru_cache(maxsize=1)
def default_tokenizer():
    """The shipped vocabulary's tokenizer; built once, it is immutable in use."""
    vocabulary = importlib.resources.files("medm2g.plugins.text").joinpath("vocabulary.txt")
    with importlib.resources.as_file(vocabulary) as path:
        return load_tokenizer(path)


def _config(table: dict, size: ModelSize):
    try:
        return table[ModelSize(size)]
    except KeyError:
        raise PluginError(f"modality 'text' has no {size!s} model size") from None


@hookimpl
def medm2g_modality_spec() -> ModalitySpec:
    return SPEC


@hookimpl
def medm2g_prompt_encoder(spec: ModalitySpec, size: ModelSize, embed_dim: int,
                          options: Mapping[str, Any]) -> TextPromptEncoder:
    """The size's BERT, or with ``options: {pretrained: FOLDER}`` a local Hugging Face model
    and the tokenizer saved beside it (a radiology BERT on disk, say)."""
    config = apply_options(_config(ENCODERS, size), options, "models.text.prompt_encoder")
    tokenizer = load_tokenizer(config.pretrained) if config.pretrained else default_tokenizer()
    return TextPromptEncoder(config, tokenizer, embed_dim)


@hookimpl
def medm2g_vae(spec: ModalitySpec, size: ModelSize, options: Mapping[str, Any]) -> TextVAE:
    """The size's Optimus-shaped VAE; with ``options: {pretrained_encoder: BERT_FOLDER,
    pretrained_decoder: GPT2_FOLDER}`` its halves start from those local folders (the paper starts
    from Optimus's BERT-base and GPT-2)."""
    config = apply_options(_config(VAES, size), options, "models.text.vae")
    if config.latent_dim != spec.latent_shape[0]:
        config = attrs.evolve(config, latent_dim=spec.latent_shape[0])
    if config.pretrained_encoder or config.pretrained_decoder:
        return TextVAE.from_folders(config, default_tokenizer())
    return TextVAE(config, default_tokenizer())


@hookimpl
def medm2g_unet(spec: ModalitySpec, size: ModelSize, context_dim: int, options: Mapping[str, Any]) -> TextDiffuser:
    return TextDiffuser(spec.latent_shape[0], context_dim,
                        apply_options(_config(DIFFUSERS, size), options, "models.text.unet"))


@hookimpl
def medm2g_vocabularies(spec: ModalitySpec) -> list[Path]:
    """The head vocabulary (the phantom cohort's reports) and the chest one (MIMIC-CXR's observations)."""
    folder = Path(__file__).parent / "vocabularies"
    return [folder / "head.yaml", folder / "chest.yaml"]


@hookimpl
def medm2g_read(spec: ModalitySpec, path: Path) -> str:
    if is_dicom_file(path):
        return read_structured_report(path)
    if path.suffix.lower() != ".txt":
        raise DataError(f"{path}: unsupported file type {path.suffix or '(none)'} for text (expected .txt or a DICOM SR)")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text: {error.reason} at byte {error.start}") from None
    if not text:
        raise DataError(f"{path}: the report is empty")
    return text


@hookimpl
def medm2g_write(spec: ModalitySpec, sample: str, path: Path, provenance) -> Path:
    if not isinstance(sample, str):
        raise DataError(f"{path}: a text sample must be a str, got {type(sample).__name__}")
    if path.suffix.lower() != ".txt":
        raise DataError(f"{path}: text is written as .txt, not {path.suffix or '(no suffix)'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sample.strip() + "\n", encoding="utf-8")
    if provenance is not None:  # plain text has no header: the provenance goes beside it
        sidecar_path(path).write_text(provenance.to_json() + "\n", encoding="utf-8")
    return path


@hookimpl
def medm2g_phantom_render(spec: ModalitySpec, subject, generator) -> PhantomRendering:
    return render_phantom(spec, subject, generator)
