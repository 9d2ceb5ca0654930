"""What a generation is conditioned on: a file of any installed modality, or a report typed in.

A condition is one sample in model space, exactly what the modality's prompt encoder
C_M takes in training: a (C, H, W) image (one slice of a volume) or a report string.

A condition read from a file is described in outputs by its modality and a hash of its
content (``ct sha256:3f9a1c2e4b5d slice 40``), never by its path: PACS exports name files
and folders by patient and UID, and a description travels into generated files
(DICOM DerivationDescription and ImageComments, PNG and NIfTI provenance, text sidecars).
The path as given stays on the :class:`Condition` for the caller alone
(``write_generation(..., record_condition_paths=True)`` writes it to ``generation.json``).

A report is bounded: a text file over :data:`MAX_REPORT_FILE_BYTES` is refused before it is
read, and a report over :data:`MAX_REPORT_CHARACTERS` is cut there with a warning. The text
models read their first 64 to 128 tokens; without the bound a 50 MB file took minutes and
gigabytes in the tokenizer.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import attrs
import torch

from medm2g.core.errors import ConfigError, DataError
from medm2g.registry import ModalityKind, ModalityRegistry, unknown_modality_message

logger = logging.getLogger("medm2g.generate")

MAX_REPORT_CHARACTERS = 10_000
"""A report condition is cut to this many characters (about four pages; the text models read the
first 64 to 128 tokens of it), with a warning."""

MAX_REPORT_FILE_BYTES = 1 << 20
"""A text-modality file over this size (1 MiB) is refused as a condition before it is read."""

DIGEST_LENGTH = 12
"""Hex digits of SHA-256 in a condition's description: enough to tell files apart, no path."""


@attrs.frozen
class Condition:
    """One condition: its modality, its sample in model space and how to name it in outputs
    (``description``: never a path). ``path`` is the file as given, or None for a report typed
    in; it is for the caller's own bookkeeping and goes into no generated file."""

    modality: str
    sample: torch.Tensor | str
    description: str
    path: str | None = attrs.field(default=None, kw_only=True)

    @property
    def is_text(self) -> bool:
        return isinstance(self.sample, str)


def _short(text: str, length: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 3] + "..."


def content_digest(path: Path) -> str:
    """``sha256:`` and the first hex digits of the SHA-256 of a file's bytes; for a folder (a DICOM
    series), of every file in it in name order, each name hashed with its bytes."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()[:DIGEST_LENGTH]}"


def bounded_report(text: str, origin: str) -> str:
    """``text``, cut to :data:`MAX_REPORT_CHARACTERS` with a warning naming ``origin`` where longer."""
    if len(text) <= MAX_REPORT_CHARACTERS:
        return text
    logger.warning("%s: the report has %d characters; only its first %d condition the generation",
                   origin, len(text), MAX_REPORT_CHARACTERS)
    return text[:MAX_REPORT_CHARACTERS]


def _check_report_size(path: Path, modality: str) -> None:
    try:
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    except OSError:
        return  # the plugin's reader says what is wrong with it
    if size > MAX_REPORT_FILE_BYTES:
        raise DataError(f"{path}: {size / 2**20:.1f} MiB is too large for a report condition (at most "
                        f"{MAX_REPORT_FILE_BYTES // 2**20} MiB, of which the first {MAX_REPORT_CHARACTERS} "
                        f"characters are used); give a file holding the report alone (named by --from {modality}=...)")


def read_condition(argument: str, registry: ModalityRegistry, slice_index: int | None = None) -> Condition:
    """``MODALITY=VALUE`` as a condition: VALUE is a file the modality's plugin reads (DICOM, NIfTI,
    PNG, .txt, ...) or, for a text modality, the report itself. A volume gives its ``slice_index``
    (default: the middle slice)."""
    modality, separator, value = argument.partition("=")
    if not separator or not modality or not value:
        raise ConfigError(f"--from {argument!r}: expected MODALITY=FILE, or text=\"REPORT\" for a report")
    if modality not in registry:
        raise ConfigError(f"--from {argument!r}: {unknown_modality_message(modality, registry)}")
    spec = registry[modality].spec
    path = Path(value)
    if spec.kind is ModalityKind.TEXT and not (path.suffix.lower() in spec.file_suffixes and path.exists()):
        if path.suffix.lower() == ".txt":
            raise DataError(f"{path}: file not found (named by --from {modality}=...)")
        report = bounded_report(value.strip(), f"--from {modality}")
        return Condition(modality, report, f"{modality} \"{_short(report)}\"")
    if spec.kind is ModalityKind.TEXT:
        _check_report_size(path, modality)
    return condition_of_file(modality, path, registry[modality].read(path), registry, slice_index)


def condition_of_file(modality: str, path: Path, sample, registry: ModalityRegistry,
                      slice_index: int | None = None) -> Condition:
    """The condition of a file ``registry[modality]`` has already read into ``sample`` (so a caller that
    needs the whole volume too reads it once); a volume gives its ``slice_index`` (default: the middle)."""
    spec, value = registry[modality].spec, str(path)
    described = f"{modality} {content_digest(path)}"  # never the path: file names carry identifiers
    if isinstance(sample, str):
        return Condition(modality, bounded_report(sample, str(path)), described, path=value)
    if spec.kind is ModalityKind.VOLUME:
        index = sample.shape[0] // 2 if slice_index is None else slice_index
        if not 0 <= index < sample.shape[0]:
            raise DataError(f"{path}: --slice {index} is outside its {sample.shape[0]} slices")
        return Condition(modality, sample[index], f"{described} slice {index}", path=value)
    return Condition(modality, sample, described, path=value)


@torch.no_grad()
def embed_conditions(conditions: list[Condition], encoders, device: torch.device) -> torch.Tensor:
    """(len(conditions), D) prompt embeddings in the aligned space, each by its own modality's C_M."""
    rows = []
    for condition in conditions:
        encoder = encoders(condition.modality)
        batch = [condition.sample] if condition.is_text else condition.sample[None].to(device)
        rows.append(encoder(batch).float())
    return torch.cat(rows)
