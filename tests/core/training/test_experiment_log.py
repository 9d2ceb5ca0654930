"""Experiment logs: every stage's steps and pictures reach accelerate's trackers, and TensorBoard reads them back."""

from __future__ import annotations

import numpy as np
import pytest

from medm2g.core.errors import ConfigError
from medm2g.core.training.experiment_log import ExperimentLog, check_trackers, image_grid


def read_events(folder):
    """{scalar tag: [(step, value)]} and the image tags of a TensorBoard run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags["scalars"]}
    return scalars, set(tags["images"])


def test_rows_and_pictures_are_read_back_by_tensorboard(tmp_path):
    log = ExperimentLog(tmp_path, "01-vae-ct", ["tensorboard"])
    log.rows([{"step": 0, "loss": 2.0, "lr": 1e-4, "seconds": 0.5},
              {"step": 1, "loss": 1.5, "lr": 2e-4, "seconds": 1.25}])
    log.rows([{"step": 2, "loss": 1.0, "kl": 0.1, "lr": 3e-4, "seconds": 2.0}])  # the next checkpoint: a new writer
    log.pictures({"curves": np.zeros((8, 12, 3), np.uint8)}, step=3)
    assert len(list((tmp_path / "01-vae-ct").glob("events.*"))) == 1  # one tracker run for the stage
    scalars, images = read_events(tmp_path / "01-vae-ct")  # readable before close: flushed at each checkpoint
    log.close()
    assert scalars["loss"] == [(1, 2.0), (2, 1.5), (3, 1.0)]  # steps counted from 1, as the progress bar does
    assert [step for step, _ in scalars["lr"]] == [1, 2, 3] and scalars["kl"] == [(3, pytest.approx(0.1))]
    assert [(s, round(v, 3)) for s, v in scalars["step_seconds"]] == [(2, 0.75), (3, 0.75)]
    assert images == {"curves"}


def test_no_trackers_writes_nothing(tmp_path):
    log = ExperimentLog(tmp_path, "run", ["none"])
    log.rows([{"step": 0, "loss": 1.0}])
    assert not log.active and not any(tmp_path.iterdir())
    assert not ExperimentLog(tmp_path, "run", ["tensorboard"], enabled=False).active  # not the main process


def test_an_unknown_or_missing_tracker_is_refused_before_training():
    check_trackers(["tensorboard", "none"])
    with pytest.raises(ConfigError, match=r"log_with: unknown tracker 'tensorbored' \(accelerate's: .*tensorboard"):
        check_trackers(["tensorbored"])
    from accelerate.tracking import get_available_trackers

    missing = next(name for name in ("aim", "clearml", "dvclive", "swanlab", "comet_ml")
                   if name not in {str(t) for t in get_available_trackers()})
    with pytest.raises(ConfigError, match=rf"acceleration.log_with: {missing} is not installed: pip install "):
        check_trackers([missing])


def test_image_grid_lays_rows_of_images_out_in_the_display_range():
    import torch

    white, black = torch.ones(1, 4, 4), -torch.ones(1, 4, 4)
    grid = image_grid([[white, black], [black, white]])
    assert grid.shape == (8, 8, 3) and grid[0, 0, 0] == 255 and grid[0, 4, 0] == 0 and grid[4, 0, 0] == 0


def test_every_stage_of_a_trained_run_opens_in_tensorboard(tiny_trained_run):
    stages = sorted(p.name for p in (tiny_trained_run / "stages").iterdir())
    assert sorted(p.name for p in (tiny_trained_run / "logs").iterdir()) == stages
    for stage in stages:
        scalars, images = read_events(tiny_trained_run / "logs" / stage)
        assert [step for step, _ in scalars["loss"]] == [1, 2, 3], stage  # the tiny config's 3 steps
        assert "lr" in scalars and "step_seconds" in scalars and "curves" in images, stage
        if "-vae-" in stage and not stage.endswith("text"):
            assert "reconstructions (top: data, bottom: VAE)" in images, stage
        if "-ldm-" in stage and not stage.endswith("text"):
            assert "samples (top: data, bottom: sampled from its condition)" in images, stage
