"""The plan stage of a ``backend: vq-ar`` edge: a report modality and an imaging one.

It trains, on the edge's paired training records (reports with their images, the key slice of
a volume), the imaging modality's VQ-GAN codebook, then the word-patch alignment of the reports'
anatomy-pathology prompts with the codebook's patches, then the transformer that writes an image's
tokens from a prompt; the three land in ``RUN/models/<a>-<b>/vq-ar.safetensors``, which ``medm2g
generate`` and ``medm2g eval`` read.
"""

from __future__ import annotations

import torch

from medm2g.core.backends.vq_ar.model import VQAutoregressive, load_vq_ar, save_vq_ar
from medm2g.core.backends.vq_ar.tokens import PromptTokens
from medm2g.core.backends.vq_ar.training import (
    alignment_step,
    codebook_step,
    reconstruction_error,
    train_phase,
    transformer_step,
)
from medm2g.core.backends.vq_ar.transformer import PROMPT_LENGTH
from medm2g.core.config.run_config import RunConfig
from medm2g.core.errors import CheckpointError, ConfigError
from medm2g.core.graph.engine import Stage
from medm2g.core.io.checkpoints import write_json
from medm2g.core.prompting.for_run import RunPrompts
from medm2g.core.training.data import paired_records
from medm2g.core.training.encoders import seeded_init
from medm2g.core.training.experiment_log import stage_log
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.loop import complete_stage, stage_record
from medm2g.core.training.run import Run
from medm2g.registry import ModalityRegistry

BACKEND = "vq-ar"


def edge_sides(registry: ModalityRegistry, a: str, b: str) -> tuple[str, str]:
    """(report modality, imaging modality) of an edge, whichever order the graph names them."""
    kinds = {m: registry[m].spec.kind for m in (a, b)}
    texts = [m for m in (a, b) if not kinds[m].is_imaging]
    images = [m for m in (a, b) if kinds[m].is_imaging]
    if len(texts) != 1 or len(images) != 1:
        raise ConfigError(f"vq-ar {a}-{b}: the edge pairs one report modality with one imaging modality")
    return texts[0], images[0]


def edge_prompts(registry: ModalityRegistry, config: RunConfig) -> RunPrompts:
    """The run's prompt writer (``prompting.vocabulary`` and ``prompting.generator``)."""
    return RunPrompts.for_config(registry, config)


def image_size(registry: ModalityRegistry, image: str) -> tuple[int, int]:
    spec = registry[image].spec
    size = tuple(spec.image_size or ())
    if len(size) != 2 or size[0] != size[1]:
        raise ConfigError(f"vq-ar: {image} needs one square image size, got {size}; set grids.{image}.image_size")
    return spec.channels, size[0]


def build_vq_ar(registry: ModalityRegistry, a: str, b: str, config: RunConfig,
                prompts: RunPrompts | None = None) -> VQAutoregressive:
    """An untrained model for edge a-b; its prompt tokens cover ``prompts``' vocabulary (the run's, made here
    when not given)."""
    text, image = edge_sides(registry, a, b)
    channels, size = image_size(registry, image)
    vocabulary = (prompts or edge_prompts(registry, config)).vocabulary
    tokens = PromptTokens.for_vocabulary(vocabulary, config.vq_ar.instruction)
    with seeded_init(config.seed + 17, f"vq-ar {text}-{image}"):
        return VQAutoregressive(text, image, channels, size, tokens, config.vq_ar)


def run_vq_ar_stage(run: Run, stage: Stage) -> dict:
    """Train (or resume) the three parts of the stage's edge on the main process; returns its record."""
    registry, config, layout, engine = run.registry, run.config, run.layout, run.engine
    a, b = stage.modalities
    if not engine.is_main:
        return complete_stage(layout, stage, {}, engine)
    prompts = edge_prompts(registry, config)
    model = build_vq_ar(registry, a, b, config, prompts)
    data = paired_records(run.plan.graph, stage.datasets, (model.text, model.image), registry, split="train")
    reports = [record[model.text] for record in data]
    images = torch.stack([record[model.image].float() for record in data])
    device, settings, folder = engine.device, config.vq_ar, layout.stage_dir(stage)
    folder.mkdir(parents=True, exist_ok=True)
    model.to(device)
    experiment = stage_log(layout, stage, config.acceleration.log_with)
    skips = config.acceleration.skip_nonfinite_steps
    common = dict(folder=folder, checkpoint_every=settings.checkpoint_every, skip_nonfinite=skips,
                  experiment=experiment)
    seed = config.seed + stage.index
    title = f"stage {stage.index}: {stage.title}"

    optimizer = torch.optim.Adam(model.codebook.parameters(), lr=settings.codebook_learning_rate, betas=(0.5, 0.9))
    codebook_log, seconds = train_phase("codebook", model.codebook, optimizer, settings.codebook_steps,
                                        codebook_step(model, images, optimizer, device), seed=seed,
                                        label=f"{title} (codebook)", **common)
    codebook_quality = reconstruction_error(model, images, device)

    written = [prompts.prompt(report).text for report in reports]
    rows, masks = model.tokens.padded(written, PROMPT_LENGTH)
    codes, mirrored = (part.cpu() for part in model.patch_codes(images))
    with torch.no_grad():
        model.alignment.learn_typical(model.codebook.embed(mirrored.to(device)))
    optimizer = torch.optim.Adam(model.alignment.parameters(), lr=settings.alignment_learning_rate)
    alignment_log, more = train_phase("alignment", model.alignment, optimizer, settings.alignment_steps,
                                      alignment_step(model, torch.tensor(rows), torch.tensor(masks), codes, mirrored,
                                                     optimizer, device), seed=seed,
                                      label=f"{title} (alignment)", **common)
    seconds += more

    keyed = model.prompt_conditions(reports, prompts)  # key patches of the trained alignment
    conditions, condition_masks = model.conditioning(keyed, "cpu")
    optimizer = torch.optim.Adam(model.transformer.parameters(), lr=settings.transformer_learning_rate)
    transformer_log, more = train_phase("transformer", model.transformer, optimizer, settings.transformer_steps,
                                        transformer_step(model, conditions, condition_masks, codes.flatten(1),
                                                         optimizer, device, engine.autocast), seed=seed,
                                        label=f"{title} (transformer)", **common)
    seconds += more
    experiment.close()

    weights = save_vq_ar(layout.translation(a, b, backend=BACKEND), model.cpu(), stage.title)
    write_json(folder / "codebook.json", codebook_quality)
    last = {name: (log[-1] if log else {}) for name, log in
            (("codebook", codebook_log), ("alignment", alignment_log), ("transformer", transformer_log))}
    history = [{"step": row["step"], "loss": row["loss"], "phase": name} for name, log in
               (("codebook", codebook_log), ("alignment", alignment_log), ("transformer", transformer_log))
               for row in log]
    return complete_stage(layout, stage, stage_record(
        stage, len(data), settings.steps, seconds, history, config,
        stage_details={"backend": BACKEND, "paired_data": True}, weights=str(weights),
        codebook=codebook_quality, last_losses=last, vocabulary=prompts.vocabulary.name, prompt_writer=prompts.name),
        engine)


def load_trained_vq_ar(registry: ModalityRegistry, a: str, b: str, config: RunConfig,
                       layout: RunLayout) -> VQAutoregressive:
    """The trained model of edge a-b (either order) of a run."""
    text, image = edge_sides(registry, a, b)
    channels, size = image_size(registry, image)
    for first, second in ((a, b), (b, a)):
        path = layout.translation(first, second, backend=BACKEND)
        if path.is_file():
            return load_vq_ar(path, channels, size, config.vq_ar)
    raise CheckpointError(f"{layout.translation(a, b, backend=BACKEND)}: no trained vq-ar model for {a}-{b}; its "
                          f"graph needs a `backend: vq-ar` pair of {a} and {b}, trained by `medm2g train`")
