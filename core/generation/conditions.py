"""What a generation is conditioned on: a file of any installed modality, or a report typed in.

A condition is one sample in model space, exactly what the modality's prompt encoder
C_M takes in training: a (C, H, W) image (one slice of a volume) or a report string.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import torch

from medm2g.core.errors import ConfigError, DataError
from medm2g.registry import ModalityKind, ModalityRegistry, unknown_modality_message


@attrs.frozen
class Condition:
    """One condition: its modality, its sample in model space and how to name it in outputs."""

    modality: str
    sample: torch.Tensor | str
    description: str

    @property
    def is_text(self) -> bool:
        return isinstance(self.sample, str)


def _short(text: str, length: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 3] + "..."


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
        return Condition(modality, value.strip(), f"{modality} \"{_short(value)}\"")
    sample = registry[modality].read(path)
    name = "/".join(path.parts[-2:])  # with its folder: generic names like ct.nii.gz say little alone
    if isinstance(sample, str):
        return Condition(modality, sample, f"{modality} {name}")
    if spec.kind is ModalityKind.VOLUME:
        index = sample.shape[0] // 2 if slice_index is None else slice_index
        if not 0 <= index < sample.shape[0]:
            raise DataError(f"{path}: --slice {index} is outside its {sample.shape[0]} slices")
        return Condition(modality, sample[index], f"{modality} {name} slice {index}")
    return Condition(modality, sample, f"{modality} {name}")


@torch.no_grad()
def embed_conditions(conditions: list[Condition], encoders, device: torch.device) -> torch.Tensor:
    """(len(conditions), D) prompt embeddings in the aligned space, each by its own modality's C_M."""
    rows = []
    for condition in conditions:
        encoder = encoders(condition.modality)
        batch = [condition.sample] if condition.is_text else condition.sample[None].to(device)
        rows.append(encoder(batch).float())
    return torch.cat(rows)
