"""A trained run behind the page: what it can do, its held-out examples, and one generation at a time.

Everything the page does goes through :class:`ServedRun`, which knows nothing of Gradio: the
page's tests call it directly on a tiny run. A request is checked before any sampling
(limits, what the run can generate and condition on), sampled by the same backends as
``medm2g generate``, written by the same writer (``generation.json``, the grid, and each
image as DICOM, NIfTI and PNG with the synthetic markers) into a folder of its own, and read
back by the phantom's finding readers where the run's data have known findings.
"""

from __future__ import annotations

import datetime
import functools
import logging
import shlex
import threading
import uuid
from pathlib import Path
from typing import Callable, Sequence

import attrs
import torch

from medm2g.core.errors import ConfigError, DataError, MedM2GError
from medm2g.core.evaluation.generation_eval import finding_readers, held_out_findings
from medm2g.core.generation.backends import GenerationRequest, default_backend, generation_backend
from medm2g.core.generation.conditions import MAX_REPORT_CHARACTERS, Condition
from medm2g.core.generation.outputs import write_generation
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.phantom.anatomy import LESION_TYPES, Finding
from medm2g.core.phantom.image_findings import subject_finding
from medm2g.core.phantom.report_findings import read_report_finding
from medm2g.core.progress import listening_to_steps
from medm2g.core.training.alignment import evaluation_manifest
from medm2g.registry import ModalityKind, ModalityRegistry

logger = logging.getLogger("medm2g.serve")

DOWNLOAD_FORMATS = ("dcm", "nii.gz", "png")
"""Every generated image is written in each of these, with its provenance."""

MAX_SAMPLES = 4
"""Samples per request: a page waits for all of them, and others wait in the queue behind it."""

MAX_STEPS = 200
EXAMPLES = 24
"""Held-out subjects offered per modality."""


@attrs.frozen
class Example:
    """A held-out subject's file (or report) offered on the page, with its truth where known."""

    subject_id: str
    modality: str
    value: str  # the report itself, or the file's path
    truth: Finding | None
    slice_index: int | None = None  # a volume's key slice (where the finding is), as the manifest names it

    @property
    def label(self) -> str:
        if self.truth is None:
            return f"{self.subject_id}"
        stated = "normal" if self.truth.is_normal else f"{self.truth.kind}, {self.truth.side} {self.truth.region}"
        return f"{self.subject_id} ({stated})"


@attrs.frozen
class Stated:
    """The finding a request states: of the report typed, or the truth of the subject picked."""

    kind: str  # a lesion type, "normal" or "unknown"
    side: str | None = None
    region: str | None = None

    @classmethod
    def of_report(cls, report: str) -> "Stated":
        found = read_report_finding(report)
        known = found.kind not in ("normal", "unknown")
        return cls(found.kind, found.side if known else None, found.region if known else None)

    @classmethod
    def of_truth(cls, truth: Finding | None) -> "Stated":
        if truth is None:
            return cls("unknown")
        return cls(truth.kind, truth.side, truth.region)


@attrs.frozen
class ShownOutput:
    """One generated output of one row, its files (every download format) and what a reader sees in it."""

    row: int
    seed: int
    modality: str
    sample: torch.Tensor | str
    files: tuple[Path, ...]
    reading: str


@attrs.frozen
class Generated:
    folder: Path
    outputs: tuple[ShownOutput, ...]
    backend: str
    command: str  # the `medm2g generate` line that makes the same samples

    def files(self) -> list[Path]:
        return [self.folder / "generation.json", *(f for output in self.outputs for f in output.files)]


def report_condition(text: str, modality: str) -> Condition:
    """A report typed on the page as a condition; empty or over-long reports are refused, not cut."""
    report = " ".join(text.split()) if text else ""
    if not report:
        raise DataError("the report is empty: type one, or pick a held-out report")
    if len(text) > MAX_REPORT_CHARACTERS:
        raise DataError(f"the report has {len(text)} characters; the page takes at most {MAX_REPORT_CHARACTERS} "
                        f"(the text models read its first 64 to 128 tokens)")
    shown = report if len(report) <= 60 else report[:57] + "..."
    return Condition(modality, text.strip(), f"{modality} \"{shown}\"")


class ServedRun:
    """One trained run, served: its capabilities, held-out examples and (serialised) generation."""

    def __init__(self, run: TrainedRun, work: Path):
        self.run = run
        self.work = Path(work)
        self._lock = threading.Lock()  # models load lazily and sample in place: one request at a time
        self._examples: dict[tuple[str, int], list[Example]] = {}

    @classmethod
    def open(cls, run_dir: Path | str, registry: ModalityRegistry, work: Path,
             device: str | None = None) -> "ServedRun":
        return cls(TrainedRun.open(run_dir, registry, device=device), work)

    @property
    def registry(self) -> ModalityRegistry:
        return self.run.registry

    # what the run can do ------------------------------------------------------------------------------

    def outputs(self) -> list[str]:
        """Modalities the page offers to generate: every one the run has an LDM of, and any target
        only a translation edge reaches."""
        offered = list(self.run.generatable())
        return offered + [t for _, t in self.run.translatable() if t not in offered]

    def image_outputs(self) -> list[str]:
        return [m for m in self.outputs() if self.registry[m].spec.kind.is_imaging]

    def report_modalities(self) -> list[str]:
        """Text modalities a typed report can condition on."""
        return [m for m in self.run.conditionable() if self.registry[m].spec.kind is ModalityKind.TEXT]

    def image_conditions(self) -> list[str]:
        """Imaging modalities a file can condition on: aligned ones, and translation sources."""
        aligned = [m for m in self.run.conditionable() if self.registry[m].spec.kind.is_imaging]
        return aligned + [s for s, _ in self.run.translatable() if s not in aligned]

    def joint_outputs(self) -> list[str]:
        return list(self.run.jointly_generatable())

    def backends(self, source: str | None, outputs: Sequence[str]) -> list[str]:
        """medm2g (where it can) and the backend of a translation edge from ``source`` to a single output."""
        offered = ["medm2g"] if all(m in self.run.generatable() for m in outputs) else []
        if source is not None and len(outputs) == 1:
            backend = self.run.translation_backend(source, outputs[0])
            if backend is not None and backend not in offered:
                offered.append(backend)
        return offered

    def finding_types(self) -> list[str]:
        """Lesion types the readers can look for (none where the data have no known findings)."""
        kinds = {kind for reader in self.readers.values() for kind in reader.polarity}
        return [kind for kind in LESION_TYPES if kind in kinds] + sorted(kinds - set(LESION_TYPES))

    @functools.cached_property
    def readers(self) -> dict:
        """A finding reader per imaging output, fitted on the run's training data (phantom data only)."""
        try:
            return finding_readers(self.run.plan, self.registry, self.image_outputs())
        except MedM2GError as error:  # training data moved away: the page still generates, unread
            logger.warning("no finding readers: %s", error)
            return {}

    @functools.cached_property
    def _held_out(self):
        try:
            return evaluation_manifest(self.run.plan, self.registry)
        except MedM2GError as error:
            logger.info("no held-out examples: %s", error)
            return None

    def examples(self, modality: str, limit: int = EXAMPLES) -> list[Example]:
        """Up to ``limit`` held-out subjects' ``modality`` (reports as text, images as file paths); read
        once per server, as every page request that lists or picks one asks again."""
        key = (modality, limit)
        if key not in self._examples:
            self._examples[key] = self._read_examples(modality, limit)
        return self._examples[key]

    def _read_examples(self, modality: str, limit: int) -> list[Example]:
        manifest = self._held_out
        if manifest is None or modality not in manifest.modalities:
            return []
        records = manifest.having(modality)[:limit]
        text = self.registry[modality].spec.kind is ModalityKind.TEXT
        # an inline report's truth lies beside the subject's images: looked up for all records at once
        beside = held_out_findings(manifest, [r.subject_id for r in records], self.registry) if text else []
        found = []
        for index, record in enumerate(records):
            value = record.values[modality]
            path = None if text and not value.lower().endswith(".txt") else manifest.resolve(value)
            if text and path is not None:
                value = str(self.registry[modality].read(path))
            elif path is not None:
                value = str(path)
            truth = subject_finding(path) if path is not None else beside[index]
            found.append(Example(record.subject_id, modality, value, truth, record.slice_index))
        return found

    # generation --------------------------------------------------------------------------------------

    def generate(self, conditions: Sequence[Condition], outputs: Sequence[str], *, joint: bool = False,
                 samples: int = 1, seed: int = 0, steps: int | None = None, guidance: float | None = None,
                 backend: str | None = None, stated: Stated = Stated("unknown"), look_for: str | None = None,
                 on_step: Callable[[int, int], None] | None = None) -> Generated:
        """Sample ``outputs`` from ``conditions``, write them into a new folder under the work folder,
        and read each image for ``look_for`` (default: the stated finding's type)."""
        outputs = list(outputs)
        if not outputs:
            raise ConfigError("choose at least one modality to generate")
        if not 1 <= samples <= MAX_SAMPLES:
            raise ConfigError(f"samples must be 1 to {MAX_SAMPLES}, got {samples}")
        if steps is not None and not 1 <= steps <= MAX_STEPS:
            raise ConfigError(f"steps must be 1 to {MAX_STEPS}, got {steps}")
        if guidance is not None and not 0 <= guidance <= 20:
            raise ConfigError(f"guidance scale must be 0 to 20, got {guidance:g}")
        request = GenerationRequest(outputs=outputs, conditions=conditions, samples_per_condition=samples, seed=seed,
                                    joint=joint, steps=steps, guidance_scale=guidance, batch_size=MAX_SAMPLES)
        name = backend or default_backend(self.run, request)  # the backend's own check refuses what it cannot do
        sources = {c.modality for c in conditions}
        offered = self.backends(next(iter(sources)) if len(sources) == 1 else None, outputs)
        if backend is not None and name not in offered:
            raise ConfigError(f"the {name} backend cannot generate {', '.join(outputs)} from "
                              f"{', '.join(sorted(sources)) or 'nothing'} in this run "
                              f"(it can with: {', '.join(offered) or 'no backend'})")
        command = self.command(request, name)
        with self._lock:
            generator = generation_backend(name, self.run)
            with listening_to_steps(on_step or (lambda done, total: None)):
                rows = generator.generate(request)
            folder = self.work / "requests" / (datetime.datetime.now().strftime("%Y%m%d-%H%M%S-")
                                               + uuid.uuid4().hex[:6])
            record = write_generation(folder, request, rows, self.registry,
                                      model=f"medm2g run {self.run.layout.root.resolve()}", backend=name,
                                      command=command, details=generator.describe(request),
                                      also_formats=DOWNLOAD_FORMATS)
        kind = look_for or (stated.kind if stated.kind in self.finding_types() else None)
        shown = []
        for row, (generated, written) in enumerate(zip(rows, record["rows"])):
            for modality, value in generated.outputs.items():
                files = [folder / written["files"][modality], *(folder / f for f in written.get("also_files", {})
                                                              .get(modality, ()))]
                shown.append(ShownOutput(row, generated.seed, modality, value, tuple(files),
                                         self.reading(modality, value, kind, stated)))
        return Generated(folder, tuple(shown), name, command)

    def command(self, request: GenerationRequest, backend: str) -> str:
        """The ``medm2g generate`` line that makes the same samples (condition files named by hash)."""
        words = ["medm2g", "generate", str(self.run.layout.root), "--to", *request.outputs]
        for condition in request.conditions:
            value = condition.sample if condition.is_text else condition.description.split()[1]
            words += ["--from", f"{condition.modality}={value}"]
            described = condition.description.split()
            if not condition.is_text and "slice" in described:  # a volume: the slice it was read at
                words += ["--slice", described[described.index("slice") + 1]]
        words += ["-n", str(request.samples_per_condition), "--seed", str(request.seed), "--backend", backend]
        words += ["--joint"] if request.joint else []
        words += ["--steps", str(request.steps)] if request.steps else []
        words += ["--guidance", f"{request.guidance_scale:g}"] if request.guidance_scale is not None else []
        return shlex.join(words) + " --out OUT"

    def reading(self, modality: str, value: torch.Tensor | str, kind: str | None, stated: Stated) -> str:
        """What the phantom's readers see in one output, beside what was stated."""
        if isinstance(value, str):
            found = read_report_finding(value)
            read = ("a normal study" if found.kind == "normal" else
                    f"{found.kind}, {found.side}, {found.region}" if found.kind != "unknown" else "no finding it knows")
            return f"the report reader reads: {read}"
        reader = self.readers.get(modality)
        if reader is None:
            return "no finding reader (the run's data have no known findings)"
        if kind is None:
            return ("reader not applied: the condition states no lesion type (choose one under "
                    "'the reader looks for')" if stated.kind in ("normal", "unknown") else
                    f"reader not applied: it knows no {stated.kind}")
        side, region = reader.read(value, kind)
        text = f"the reader, looking for: {kind}, sees it {side} {region}"
        if stated.side is not None and kind == stated.kind:
            agrees = side == stated.side and region == stated.region
            text += (" (as stated)" if agrees else
                     f" (stated: {stated.side} {stated.region}; side {'right' if side == stated.side else 'wrong'})")
        return text
