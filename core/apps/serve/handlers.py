"""What each control of the page does, as plain functions of plain values.

The Gradio page (:mod:`.page`) only wires components to these; the fast tests call them on
a tiny run without a browser. A handler never raises for bad input: a file the run cannot
read, a modality it cannot condition on, an over-long report all come back as the status
line the page shows, and the server goes on serving. An unexpected failure is logged with
its traceback and said in one line too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import attrs
import numpy as np

from medm2g.core.apps.serve.display import DEFAULT_WINDOW, picture, window_names, window_of
from medm2g.core.apps.serve.served_run import Example, Generated, ServedRun, Stated, report_condition
from medm2g.core.apps.serve.uploads import AUTO, ReadUpload, read_upload
from medm2g.core.errors import ConfigError, MedM2GError

logger = logging.getLogger("medm2g.serve")

STATED = "the stated finding"
"""The reader choice meaning "the lesion type the report (or the subject's truth) states"."""

JOINTLY, EACH = "jointly", "each on its own"

GalleryItem = tuple[np.ndarray, str]


@attrs.frozen
class PageResult:
    """What a generate button shows: a status line, the images with captions, the reports as
    Markdown, the files to download, and the generation itself (kept for re-windowing)."""

    status: str
    gallery: list[GalleryItem] = attrs.field(factory=list)
    reports: str = ""
    files: list[str] = attrs.field(factory=list)
    generated: Generated | None = None

    @property
    def failed(self) -> bool:
        return self.generated is None


@attrs.frozen
class FileView:
    """What reading a file shows: a status line, the reading said back, the input as read."""

    status: str
    summary: str = ""
    preview: np.ndarray | None = None
    read: ReadUpload | None = None


def _optional_number(text, convert, field: str, expected: str):
    """A number field of the page: None where it is empty, else ``convert(text)`` or a message naming it."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        return convert(text)
    except ValueError:
        raise ConfigError(f"{field} {text!r}: expected {expected}") from None


def guidance_scale(text: str | float | None) -> float | None:
    """The page's guidance field: empty means the run's scale (tuned for the task, else configured)."""
    return _optional_number(text, float, "guidance scale", "a number such as 2 or 3.5, or nothing for the run's own")


def slice_number(text: str | int | None) -> int | None:
    """The page's slice field: empty means the middle slice of a volume."""
    return _optional_number(text, int, "slice", "a whole number such as 12, or nothing for the middle slice")


def _refusal(error: Exception) -> str:
    if isinstance(error, MedM2GError):
        return f"**Not done:** {error}"
    logger.exception("the page's request failed")
    return f"**Failed** ({type(error).__name__}: {error}); the server goes on serving, the log has the details"


class PageHandlers:
    """The page's behaviour for one served run."""

    def __init__(self, served: ServedRun):
        self.served = served

    # choices -----------------------------------------------------------------------------------------

    def report_examples(self) -> dict[str, Example]:
        modalities = self.served.report_modalities()
        return {example.label: example for m in modalities[:1] for example in self.served.examples(m)}

    def image_examples(self) -> dict[str, Example]:
        return {f"{example.modality} · {example.label}": example
                for m in self.served.image_conditions() for example in self.served.examples(m)}

    def windows(self) -> list[str]:
        return window_names([self.served.registry[m].spec for m in self.served.image_outputs()])

    def reader_choices(self) -> list[str]:
        return [STATED, *self.served.finding_types()]

    # reading a condition -----------------------------------------------------------------------------

    def read_file(self, path: str | Path | None, chosen: str = AUTO, slice_index: str | int | None = None,
                  name: str | None = None) -> FileView:
        if not path:
            return FileView("Drop a DICOM, NIfTI or PNG file, or pick a held-out image.")
        try:
            read = read_upload(path, self.served.registry, self.served.image_conditions(), chosen or AUTO,
                               slice_number(slice_index), name=name)
        except Exception as error:  # noqa: BLE001 (every failure becomes the page's message)
            return FileView(_refusal(error))
        spec = self.served.registry[read.modality].spec
        preview = picture(read.condition.sample, spec, DEFAULT_WINDOW, f"INPUT {read.modality} (as read)")
        return FileView(f"Read as {read.modality}.", read.summary(), preview, read)

    def read_example(self, label: str | None) -> FileView:
        example = self.image_examples().get(label or "")
        if example is None:
            return FileView(f"**Not done:** no held-out image {label!r}")
        return self.read_file(example.value, example.modality, example.slice_index,
                              name=f"held-out {example.modality} of {example.subject_id}")

    # generating ---------------------------------------------------------------------------------------

    def generate_from_report(self, report: str, outputs: Sequence[str], mode: str = EACH, samples: float = 1,
                             seed: float = 0, steps: float | None = None, guidance: str | float | None = None,
                             look_for: str = STATED, window: str = DEFAULT_WINDOW,
                             on_step: Callable[[int, int], None] | None = None) -> PageResult:
        try:
            modalities = self.served.report_modalities()
            if not modalities:
                raise ConfigError("this run cannot condition on a report (no aligned text modality)")
            condition = report_condition(report, modalities[0])
            generated = self.served.generate([condition], outputs, joint=mode == JOINTLY, samples=int(samples or 1),
                                             seed=int(seed or 0), steps=int(steps) if steps else None,
                                             guidance=guidance_scale(guidance), stated=Stated.of_report(report),
                                             look_for=None if look_for in (None, STATED) else look_for,
                                             on_step=on_step)
        except Exception as error:  # noqa: BLE001
            return PageResult(_refusal(error))
        return self.shown(generated, window)

    def generate_from_file(self, read: ReadUpload | None, outputs: Sequence[str], backend: str | None = None,
                           samples: float = 1, seed: float = 0, steps: float | None = None,
                           guidance: str | float | None = None, look_for: str = STATED, window: str = DEFAULT_WINDOW,
                           on_step: Callable[[int, int], None] | None = None) -> PageResult:
        try:
            if read is None:
                raise ConfigError("no input yet: drop a file, or pick a held-out image, first")
            generated = self.served.generate([read.condition], outputs, samples=int(samples or 1),
                                             seed=int(seed or 0), steps=int(steps) if steps else None,
                                             guidance=guidance_scale(guidance), backend=backend or None,
                                             stated=Stated.of_truth(read.truth),
                                             look_for=None if look_for in (None, STATED) else look_for,
                                             on_step=on_step)
        except Exception as error:  # noqa: BLE001
            return PageResult(_refusal(error))
        return self.shown(generated, window)

    def shown(self, generated: Generated, window: str = DEFAULT_WINDOW) -> PageResult:
        """The page's view of a generation: pictures in ``window``, reports, files, a status line."""
        gallery = self.gallery(generated, window)
        readings = [f"- row {o.row}, synthetic {o.modality}: {o.reading}" for o in generated.outputs
                    if not isinstance(o.sample, str)]
        reports = [f"**Row {o.row} (seed {o.seed}), synthetic {o.modality} report** · {o.reading}\n\n> "
                   + o.sample.replace("\n", "\n> ") for o in generated.outputs if isinstance(o.sample, str)]
        status = (f"Generated with {generated.backend}: {len(gallery)} image(s), {len(reports)} report(s); "
                  f"all synthetic. The same samples on the command line: `{generated.command}`")
        text = "\n\n".join((["\n".join(readings)] if readings else []) + reports)
        return PageResult(status, gallery, text, [str(p) for p in generated.files()], generated)

    def gallery(self, generated: Generated | None, window: str = DEFAULT_WINDOW) -> list[GalleryItem]:
        items = []
        for output in generated.outputs if generated is not None else ():
            if isinstance(output.sample, str):
                continue
            spec = self.served.registry[output.modality].spec
            shown_as, _ = window_of(spec, window or DEFAULT_WINDOW)
            label = f"SYNTHETIC {output.modality} · row {output.row}"
            items.append((picture(output.sample, spec, window or DEFAULT_WINDOW, label),
                          f"synthetic {output.modality}, row {output.row}, seed {output.seed}, window {shown_as}: "
                          f"{output.reading}"))
        return items
