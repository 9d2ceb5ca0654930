"""Atomic safetensors and JSON files: the only way medm2g writes weights and records.

Weights are safetensors (loading them runs no code, unlike a pickle). Every file is
written beside its destination under a temporary name, flushed to disk and renamed
over it, so a run killed mid-write leaves the previous file intact, never half of
a new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medm2g.core.errors import CheckpointError


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """``write`` a temporary file beside ``path``, flush it to disk, then rename it over ``path``: a
    reader (or a run resumed after a kill) sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    """Write ``text`` so that a reader sees the old file or the new one, never half of it."""
    return write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_json(path: Path, record: Any) -> Path:
    """Write ``record`` as indented JSON, atomically."""
    text = json.dumps(record, indent=2, sort_keys=False, default=str) + "\n"
    return write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: record not found") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON (line {error.lineno}): {error.msg}") from None


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> Path:
    """Save named tensors to a safetensors file, atomically.

    Tensors are copied to contiguous CPU memory; tensors sharing storage (tied
    embeddings) are saved once each under every name, which safetensors requires.
    """
    flat = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    return write_atomically(path, lambda temporary: save_file(flat, str(temporary), metadata=meta))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file: {error}") from None


def read_metadata(path: Path) -> dict[str, str]:
    """The string metadata stored in a safetensors header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file: {error}") from None


def save_module(path: Path, module: nn.Module, metadata: Mapping[str, str] | None = None) -> Path:
    """Save a module's state dict (parameters and buffers)."""
    return save_tensors(path, module.state_dict(), metadata)


def load_module(path: Path, module: nn.Module) -> nn.Module:
    """Load weights saved by :func:`save_module` into ``module``, strictly.

    A mismatch names the file and the first missing or unexpected tensor, since
    the usual cause is a checkpoint from a different model size.
    """
    state = load_tensors(path)
    expected = module.state_dict()
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    if missing or unexpected:
        detail = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise CheckpointError(
            f"{path}: does not fit this model ({len(missing)} tensors missing, {len(unexpected)} unexpected; "
            f"{detail}); was it saved from another model size?"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[name].shape)}"
            )
    module.load_state_dict(state)
    return module
