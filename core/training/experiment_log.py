"""Experiment logs through accelerate's trackers: ``RUN/logs/<stage>/`` opens in TensorBoard.

Every stage's loop already writes its steps to ``history.jsonl`` at each checkpoint; the same
rows go to the trackers the run config names (``acceleration.log_with``, TensorBoard by default;
wandb, MLflow, ... where installed): each logged number (the loss and its parts, the learning
rate), the step time, and at the end of the stage its pictures (the loss curves, a VAE's
reconstructions, an LDM's samples). Each stage is one tracker run named like its folder
(``03-alignment-ct-mri``), so TensorBoard lists the stages side by side. The trackers open at the
stage's first checkpoint and close at its end (one wandb or MLflow run per stage, not per
checkpoint); TensorBoard's file is flushed at every checkpoint, so a killed stage keeps what it
logged, and a resumed stage appends (TensorBoard shows the newest value of a repeated step).

Only the main process logs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from medm2g.core.errors import ConfigError

logger = logging.getLogger(__name__)

NO_TRACKERS = ("none",)
"""``acceleration.log_with: [none]`` (or ``[]``) turns the experiment logs off."""

INSTALL = {"tensorboard": "tensorboard", "wandb": "wandb", "comet_ml": "comet-ml", "aim": "aim", "mlflow": "mlflow",
           "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}
"""The package each tracker needs (pip name)."""


def known_trackers() -> list[str]:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    return sorted(LOGGER_TYPE_TO_CLASS)


def check_trackers(names: Sequence[str]) -> None:
    """Refuse a tracker accelerate does not know, or whose package is not installed, before training."""
    from accelerate.tracking import get_available_trackers

    available = {str(tracker) for tracker in get_available_trackers()}
    for name in names:
        if name in NO_TRACKERS:
            continue
        if name not in known_trackers():
            raise ConfigError(f"acceleration.log_with: unknown tracker {name!r} "
                              f"(accelerate's: {', '.join(known_trackers())}; or none)")
        if name not in available:
            raise ConfigError(f"acceleration.log_with: {name} is not installed: pip install {INSTALL.get(name, name)} "
                              f"(or log_with: [none])")


class ExperimentLog:
    """The experiment log of one stage: tracker run ``run_name`` under ``folder``."""

    def __init__(self, folder: Path, run_name: str, log_with: Sequence[str], enabled: bool = True):
        self.folder = Path(folder)
        self.run_name = run_name
        self.log_with = [name for name in log_with if name not in NO_TRACKERS] if enabled else []
        self._last_seconds: float | None = None
        self._trackers: list | None = None

    @property
    def active(self) -> bool:
        return bool(self.log_with)

    def _open(self) -> list:
        """The stage's trackers, started on first use and kept until :meth:`close`."""
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        if self._trackers is None:
            self._trackers = []
            for name in self.log_with:
                kind = LOGGER_TYPE_TO_CLASS[name]
                tracker = kind(self.run_name, self.folder) if kind.requires_logging_directory else kind(self.run_name)
                tracker.start()
                self._trackers.append(tracker)
        return self._trackers

    def _flush(self) -> None:
        for tracker in self._trackers or ():
            writer = getattr(tracker, "writer", None)
            if writer is not None and hasattr(writer, "flush"):
                writer.flush()

    def close(self) -> None:
        """Finish the stage's tracker runs (a later call to :meth:`rows` starts new ones)."""
        for tracker in self._trackers or ():
            tracker.finish()
        self._trackers = None

    def rows(self, rows: Iterable[Mapping[str, float]]) -> None:
        """Each row's numbers at its step (1-based, as the progress bar counts), plus ``step_seconds``:
        the time since the previous row (``seconds`` counts from the session's start)."""
        rows = list(rows)
        if not self.active or not rows:
            return
        trackers = self._open()
        for row in rows:
            values = {key: float(value) for key, value in row.items()
                      if key not in ("step", "seconds") and isinstance(value, (int, float))}
            seconds = row.get("seconds")
            if seconds is not None:
                if self._last_seconds is not None and seconds >= self._last_seconds:
                    values["step_seconds"] = float(seconds - self._last_seconds)
                self._last_seconds = float(seconds)
            for tracker in trackers:
                tracker.log(values, step=int(row["step"]) + 1)
        self._flush()

    def pictures(self, pictures: Mapping[str, np.ndarray | Path], step: int) -> None:
        """Pictures (H, W, 3 uint8 arrays, or PNG files) at ``step``: a stage's curves and samples."""
        if not self.active or not pictures:
            return
        from PIL import Image

        arrays = {}
        for tag, picture in pictures.items():
            if isinstance(picture, (str, Path)):
                if not Path(picture).is_file():
                    continue
                with Image.open(picture) as image:
                    picture = np.asarray(image.convert("RGB"))
            arrays[tag] = picture
        for tracker in self._open():
            if tracker.name == "tensorboard":  # its add_image wants the layout said
                for tag, array in arrays.items():
                    tracker.writer.add_image(tag, array, global_step=step, dataformats="HWC")
            elif hasattr(tracker, "log_images"):
                tracker.log_images({tag: [array] for tag, array in arrays.items()}, step=step)
        self._flush()


def image_grid(rows: Sequence[Sequence], display_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """(H, W, 3) uint8: rows of (C, H, W) model-space images side by side, in ``display_range``."""
    low, high = display_range
    lines = []
    for row in rows:
        tiles = []
        for image in row:
            values = np.asarray(image.detach().float().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
            values = values[:1].repeat(3, 0) if values.shape[0] != 3 else values
            tiles.append(np.clip((values - low) / (high - low), 0, 1).transpose(1, 2, 0))
        lines.append(np.concatenate(tiles, axis=1))
    return (np.concatenate(lines, axis=0) * 255).round().astype(np.uint8)


def stage_log(layout, stage, log_with: Sequence[str], is_main: bool = True) -> ExperimentLog:
    """The experiment log of ``stage`` of the run in ``layout``: ``RUN/logs/<stage folder name>``."""
    return ExperimentLog(layout.logs, layout.stage_dir(stage).name, log_with, enabled=is_main)
