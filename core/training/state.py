"""Resumable training state in one safetensors file: weights, optimizer, step and RNG.

A stage checkpoints every few steps so that a stopped run resumes where it
stopped. Optimizer state is flattened to named tensors (``optimizer.<param>.<key>``)
and the non-tensor parts (hyperparameters, step counters, scheduler state) go
into the safetensors header as JSON: nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from medm2g.core.errors import CheckpointError
from medm2g.core.io.checkpoints import load_tensors, read_metadata, save_tensors

STATE_FORMAT = "medm2g-training-state-1"


def save_training_state(
    path: Path,
    modules: Mapping[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    step: int,
    generators: Mapping[str, torch.Generator] = {},
    extra: Mapping[str, object] | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> Path:
    """Save everything needed to continue at ``step``; ``extra`` is any JSON-able record."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"module.{name}.{key}"] = value
    optimizer_state = optimizer.state_dict()
    scalars: dict[str, dict[str, object]] = {}
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    for name, generator in generators.items():
        tensors[f"generator.{name}"] = generator.get_state()
    header = {
        "format": STATE_FORMAT,
        "step": step,
        "param_groups": optimizer_state["param_groups"],
        "optimizer_scalars": scalars,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "extra": extra or {},
    }
    return save_tensors(path, tensors, {"medm2g": json.dumps(header, default=_jsonable)})


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a training state header")


def load_training_state(
    path: Path,
    modules: Mapping[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    generators: Mapping[str, torch.Generator] = {},
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> tuple[int, dict]:
    """Restore what :func:`save_training_state` saved; returns (step, extra)."""
    tensors = load_tensors(path)
    try:
        header = json.loads(read_metadata(path)["medm2g"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not a medm2g training state (no readable 'medm2g' header)") from None
    if header.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: training state format {header.get('format')!r}, expected {STATE_FORMAT!r}")
    for name, module in modules.items():
        prefix = f"module.{name}."
        state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: module {name!r} does not match the saved state "
                f"({len(missing)} missing, {len(unexpected)} unexpected tensors); the run's config changed?"
            )
    optimizer_state: dict = {"state": {}, "param_groups": header["param_groups"]}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            optimizer_state["state"].setdefault(int(index), {})[name] = value
    for index, scalars in header["optimizer_scalars"].items():
        optimizer_state["state"].setdefault(int(index), {}).update(scalars)
    try:
        optimizer.load_state_dict(optimizer_state)
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: optimizer state does not match this run: {error}") from None
    for name, generator in generators.items():
        key = f"generator.{name}"
        if key not in tensors:
            raise CheckpointError(f"{path}: no saved state for random generator {name!r}")
        generator.set_state(tensors[key])
    if scheduler is not None and header.get("scheduler") is not None:
        scheduler.load_state_dict(header["scheduler"])
    return int(header["step"]), dict(header.get("extra") or {})
