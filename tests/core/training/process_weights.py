"""`medm2g` as one process of an `accelerate launch`, keeping what this process holds in memory.

Only the main process writes a run's files, so what another process ends a stage with is
seen nowhere else. Launched in place of ``-m medm2g.core.apps.cli`` (same arguments), this
runs the command unchanged and, at the end of every stage trained on the engine (as
``run_steps`` releases it: after the last step and the EMA), writes the state of the
stage's trained modules, exactly as this process holds them, to

    $MEDM2G_PROCESS_WEIGHTS/process-<index>/<NN>-<kind>-<modalities>.safetensors

with the parameters under ``parameter/<module>.<name>`` and the buffers (BatchNorm's
running statistics, say) under ``buffer/<module>.<name>``. A stage that does not train on
the engine (SynDiff's own loop) writes nothing here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from medm2g.core.apps.cli import main
from medm2g.core.training.engine import Engine
from medm2g.core.training.layout import RunLayout

ENVIRONMENT = "MEDM2G_PROCESS_WEIGHTS"


def _state(trained) -> dict:
    tensors = {}
    for name, module in trained.items():
        for key, parameter in module.named_parameters():
            tensors[f"parameter/{name}.{key}"] = parameter.detach().cpu().clone().contiguous()
        for key, buffer in module.named_buffers():
            tensors[f"buffer/{name}.{key}"] = buffer.detach().cpu().clone().contiguous()
    return tensors


def keep_each_stages_weights(out: Path) -> None:
    """Patch the engine so that every stage's trained modules are written at its end (see above)."""
    prepare, release, stage_state = Engine.prepare, Engine.release, RunLayout.stage_state
    current: dict = {}

    def preparing(engine, trained, *arguments, **keywords):
        current["trained"] = dict(trained)
        return prepare(engine, trained, *arguments, **keywords)

    def state_of(layout, stage):  # run_steps asks it right after prepare, SynDiff's loop too
        current["stage"] = layout.stage_dir(stage).name
        return stage_state(layout, stage)

    def releasing(engine):
        if "trained" in current:
            folder = out / f"process-{engine.process}"
            folder.mkdir(parents=True, exist_ok=True)
            save_file(_state(current.pop("trained")), str(folder / f"{current['stage']}.safetensors"))
        release(engine)

    Engine.prepare, Engine.release, RunLayout.stage_state = preparing, releasing, state_of


if __name__ == "__main__":
    keep_each_stages_weights(Path(os.environ[ENVIRONMENT]))
    sys.exit(main(sys.argv[1:]))
