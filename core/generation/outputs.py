"""Generated samples on disk: one folder per row, a record of how they were made, and a picture.

::

    OUT/row-000/<modality>.<suffix>   each output of row 0, provenance embedded (or beside, for .txt)
    OUT/generation.json                the request, the run, every file and its seed, the command line
    OUT/grid.png                       condition and outputs side by side, one row per sample

Volumes are written in physical units (NIfTI by default, HU for CT); images as PNG;
reports as text. ``image_format`` overrides the imaging suffix (.png, .nii.gz, .dcm, .npy).

No output names a condition's file: conditions are described by modality and content hash
(:mod:`conditions`), and their paths are cut out of the recorded command line too. With
``record_condition_paths`` the paths (absolute) go into ``generation.json`` alone, for the
user's own bookkeeping, never into a generated file.
"""

from __future__ import annotations

import os
import re
import shlex
import textwrap
from pathlib import Path
from typing import Sequence

import torch

from medm2g.core.errors import ConfigError
from medm2g.core.generation.backends import GeneratedSample, GenerationRequest
from medm2g.core.generation.conditions import Condition
from medm2g.core.io.checkpoints import write_json
from medm2g.core.io.imaging import WRITABLE_SUFFIXES
from medm2g.core.io.provenance import Provenance
from medm2g.registry import ModalityKind, ModalityRegistry

DEFAULT_SUFFIX = {ModalityKind.IMAGE: ".png", ModalityKind.VOLUME: ".nii.gz", ModalityKind.TEXT: ".txt"}
GRID_ROWS = 16
"""At most this many rows go into grid.png; every row is written as files regardless."""


def output_suffix(registry: ModalityRegistry, modality: str, image_format: str | None) -> str:
    spec = registry[modality].spec
    if spec.kind is ModalityKind.TEXT or image_format is None:
        return DEFAULT_SUFFIX[spec.kind]
    suffix = image_format if image_format.startswith(".") else f".{image_format}"
    writable = [s for s in WRITABLE_SUFFIXES if s in spec.file_suffixes]
    if suffix not in writable:
        raise ConfigError(f"--format {image_format!r}: {modality} is written as one of {', '.join(writable)}")
    return suffix


def _source(request: GenerationRequest, sample: GeneratedSample) -> str:
    source = "unconditional" if sample.condition is None else request.conditions[sample.condition].description
    if request.joint:
        source += f", jointly with {', '.join(request.outputs)}"
    return source


def without_condition_paths(command: str, conditions: Sequence[Condition]) -> str:
    """``command`` with each condition file's path (``--from ct=PATH``) replaced by its content hash."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: not a command line medm2g wrote; cut the paths as text
        words = None
    for condition in conditions:
        if condition.path is None:
            continue
        hashed = re.search(r"sha256:[0-9a-f]+", condition.description)
        replacement = hashed.group(0) if hashed else "FILE"
        given = f"{condition.modality}={condition.path}"
        if words is None:
            command = command.replace(condition.path, replacement)
        else:
            words = [w[: -len(given)] + f"{condition.modality}={replacement}" if w.endswith(given) else w
                     for w in words]
    return command if words is None else shlex.join(words)


def write_generation(out: Path, request: GenerationRequest, samples: Sequence[GeneratedSample],
                     registry: ModalityRegistry, model: str, backend: str, command: str,
                     image_format: str | None = None, details: dict | None = None,
                     record_condition_paths: bool = False, also_formats: Sequence[str] = ()) -> dict:
    """Write every sample, ``generation.json`` and ``grid.png``; returns the record written.
    ``details`` (what the backend did beyond the request) is recorded as given. Conditions are
    named by modality and content hash everywhere; ``record_condition_paths`` adds their files'
    absolute paths (``condition_paths``, None for a report typed in) to ``generation.json`` alone,
    and keeps them in its ``command``. ``also_formats`` writes each imaging output once more in each
    of these formats (``medm2g serve`` offers DICOM, NIfTI and PNG of every image), recorded as a
    row's ``also_files``, with the same provenance."""
    out = Path(out)
    suffixes = {m: output_suffix(registry, m, image_format) for m in request.outputs}
    imaging = [m for m in request.outputs if registry[m].spec.kind.is_imaging]
    extra = {m: [s for s in dict.fromkeys(output_suffix(registry, m, f) for f in also_formats) if s != suffixes[m]]
             for m in imaging}
    rows = []
    for row, sample in enumerate(samples):
        provenance = Provenance(model=model, source=_source(request, sample), seed=sample.seed)
        files, also = {}, {}
        for modality, value in sample.outputs.items():
            folder = out / f"row-{row:03d}"
            if registry[modality].spec.kind is ModalityKind.VOLUME:
                value = value[None]  # one generated slice is a one-slice volume
            files[modality] = str(registry[modality].write(value, folder / f"{modality}{suffixes[modality]}",
                                                           provenance).relative_to(out))
            for suffix in extra.get(modality, ()):
                written = registry[modality].write(value, folder / f"{modality}{suffix}", provenance)
                also.setdefault(modality, []).append(str(written.relative_to(out)))
        rows.append({"row": row, "condition": sample.condition, "sample": sample.index, "seed": sample.seed,
                     "files": files, **({"also_files": also} if also else {}),
                     **({"text": {m: v for m, v in sample.outputs.items() if isinstance(v, str)}}
                        if any(isinstance(v, str) for v in sample.outputs.values()) else {})})
    record = {
        "model": model, "backend": backend,
        "command": command if record_condition_paths else without_condition_paths(command, request.conditions),
        "outputs": list(request.outputs), "joint": request.joint,
        "conditions": [c.description for c in request.conditions],
        **({"condition_paths": [os.path.abspath(c.path) if c.path is not None else None for c in request.conditions]}
           if record_condition_paths else {}),
        "samples_per_condition": request.samples_per_condition, "seed": request.seed,
        "steps": request.steps, "guidance_scale": request.guidance_scale,
        "rows": rows, "grid": "grid.png", **(details or {}),
    }
    draw_grid(out / "grid.png", request, samples, registry)
    write_json(out / "generation.json", record)
    return record


def _show(axis, value, registry: ModalityRegistry, modality: str) -> None:
    axis.set_xticks([])
    axis.set_yticks([])
    if isinstance(value, str):
        axis.text(0.02, 0.98, "\n".join(textwrap.wrap(value, 34)[:12]), va="top", ha="left", fontsize=6.5,
                  transform=axis.transAxes, family="serif")
        return
    image = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    low, high = registry[modality].spec.intensity.display_range()
    axis.imshow(image[0].float().cpu().numpy(), cmap="gray", vmin=low, vmax=high)


def draw_grid(path: Path, request: GenerationRequest, samples: Sequence[GeneratedSample],
              registry: ModalityRegistry) -> Path:
    """Condition (when there is one) then each output, one row per sample, images in their display window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(samples)[:GRID_ROWS]
    columns = (["condition"] if request.conditions else []) + list(request.outputs)
    figure, axes = plt.subplots(len(shown), len(columns), figsize=(2.2 * len(columns), 2.3 * len(shown)),
                                squeeze=False, dpi=110)
    for row, sample in enumerate(shown):
        for column, name in enumerate(columns):
            axis = axes[row, column]
            if name == "condition":
                condition = request.conditions[sample.condition]
                _show(axis, condition.sample, registry, condition.modality)
                axis.set_xlabel(condition.modality, fontsize=7)
            else:
                _show(axis, sample.outputs[name], registry, name)
            if row == 0:
                axis.set_title("condition" if name == "condition" else f"generated {name}", fontsize=9)
        axes[row, 0].set_ylabel(f"row {row}\nseed {sample.seed}", fontsize=7)
    mode = "jointly" if request.joint else "each on its own"
    figure.suptitle(f"medm2g samples ({mode}; synthetic, radiological view)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
