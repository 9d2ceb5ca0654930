"""Central alignment training (sections 3.2 and 3.3): the alignment stages of a plan.

Each stage aligns one star edge A-B on the paired data the graph names for it:

    L = w_nce * InfoNCE(C_A(x_A), C_B(x_B))                       (eq. 3)
      + w_vi  * sum over trained imaging M of L_VI(C_M(v1), C_M(v2))   (eq. 4)

where v1, v2 are two augmented views from M's plugin; v1 is also what InfoNCE
sees, so the visual invariant costs one extra forward pass, not two. Only the
encoders the stage trains get gradients and optimizer state; the other side is
frozen (eval mode, no grad), which is what makes the star work: MRI learns to
map next to the CT embedding that is already aligned with text.

A stage checkpoints every ``checkpoint_every`` steps and a run resumes at the
stage and step where it stopped; batches and augmentations are functions of
(seed, stage, step), so a resumed stage takes the same steps as an
uninterrupted one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from medm2g.core.config.run_config import AlignmentConfig, RunConfig
from medm2g.core.data.manifest import Manifest, read_manifest, validate_manifest
from medm2g.core.errors import ConfigError, DataError
from medm2g.core.graph.engine import ParamGroup, Part, Stage, StageKind, TrainingPlan
from medm2g.core.io.checkpoints import read_json
from medm2g.core.metrics.retrieval import embed, held_out_embeddings, recall_at_k, retrieval_table, write_retrieval
from medm2g.core.models.losses import LearnableTemperature, symmetric_info_nce, visual_invariant_loss
from medm2g.core.training.batches import make_batch, to_device
from medm2g.core.training.data import manifest_path, paired_records
from medm2g.core.training.encoders import (
    build_prompt_encoder,
    load_prompt_encoders,
    resolve_device,
    save_prompt_encoder,
)
from medm2g.core.training.groups import trained_parameters
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.loop import StageResult, complete_stage, run_steps, stage_record
from medm2g.core.training.run import Run
from medm2g.core.training.shards import Shard
from medm2g.registry import ModalityRegistry

logger = logging.getLogger("medm2g.align")


class AlignmentStep:
    """The loss of one alignment stage on one batch: eq. 3 plus eq. 4 for its VI modalities."""

    def __init__(self, stage: Stage, encoders: Mapping[str, nn.Module], augmentations: Mapping[str, object],
                 temperature: LearnableTemperature, config: AlignmentConfig):
        self.stage, self.encoders, self.augmentations = stage, encoders, augmentations
        self.temperature, self.config = temperature, config
        self.trained = {group.modality for group in stage.trains}
        self.visual_invariant = set(stage.visual_invariant) if config.visual_invariant else set()

    def __call__(self, batch: dict, shard: Shard, device: torch.device) -> tuple[torch.Tensor, dict]:
        embeddings, vi_terms = {}, {}
        for modality in self.stage.modalities:
            samples = to_device(batch[modality], device)
            encoder = self.encoders[modality]
            if modality not in self.trained:
                with torch.no_grad():
                    embeddings[modality] = shard.gather(encoder(samples).float())
                continue
            if modality in self.visual_invariant:
                augment = self.augmentations[modality]
                view_1, view_2 = shard.random.each_sample(augment, samples), shard.random.each_sample(augment, samples)
                z_1, z_2 = (shard.gather(z.float()) for z in encoder(torch.cat([view_1, view_2])).chunk(2))
                vi_terms[modality] = visual_invariant_loss(z_1, z_2, self.config.lambda_offdiagonal)
                embeddings[modality] = z_1
            else:
                embeddings[modality] = shard.gather(encoder(samples).float())
        if len(self.stage.modalities) == 1:  # a modality alone (single-modality data): eq. 4 is all there is
            if not vi_terms:
                raise ConfigError(f"{self.stage.title}: a modality without a pair trains its prompt encoder "
                                  f"through the visual invariant alone, which {self.stage.modalities[0]} does not "
                                  f"have here (not imaging, or alignment.visual_invariant is off)")
            loss, logs = torch.zeros((), device=device), {}
        else:
            a, b = self.stage.modalities
            tau = self.temperature() if self.config.learn_temperature else torch.tensor(self.config.temperature)
            info_nce = symmetric_info_nce(embeddings[a], embeddings[b], tau)
            loss = self.config.info_nce_weight * info_nce
            logs = {"info_nce": float(info_nce.detach()), "temperature": float(tau.detach())}
        for modality, term in vi_terms.items():
            loss = loss + self.config.visual_invariant_weight * term
            logs[f"vi_{modality}"] = float(term.detach())
        return loss, logs


def _freeze(encoder: nn.Module) -> None:
    encoder.eval()
    encoder.requires_grad_(False)


@torch.no_grad()
def _validation_recall(graph, stage: Stage, encoders, registry, device) -> dict | None:
    """R@1 both ways on the stage's validation records, when it has at least two."""
    try:
        data = paired_records(graph, stage.datasets, stage.modalities, registry, split="val")
    except DataError:  # no validation split is normal for user data
        return None
    if len(data) < 2 or len(stage.modalities) != 2:
        return None
    a, b = stage.modalities
    items = [data[i] for i in range(len(data))]
    z_a = embed(encoders[a], [item[a] for item in items], device)
    z_b = embed(encoders[b], [item[b] for item in items], device)
    return {"subjects": len(items), f"{a}->{b} R@1": recall_at_k(z_a, z_b, (1,))[1],
            f"{b}->{a} R@1": recall_at_k(z_b, z_a, (1,))[1], "chance R@1": 1 / len(items)}


def run_alignment_stage(run: Run, stage: Stage, encoders: dict[str, nn.Module]) -> dict:
    """Train one alignment stage from where it stopped; returns its record.

    On several processes the embeddings are gathered before the losses, so InfoNCE's negatives
    and Barlow Twins' batch statistics span the whole step's batch, as on one process; what
    stays per process is BatchNorm's statistics and dropout masks inside the encoders."""
    plan, registry, config, layout, engine = run.plan, run.registry, run.config, run.layout, run.engine
    settings, device = config.alignment, engine.device
    trained = [group.modality for group in stage.trains]
    for modality in stage.modalities:
        encoders[modality].to(device)
        if modality in trained:
            encoders[modality].train().requires_grad_(True)
        else:
            _freeze(encoders[modality])
    engine.checkpoint_gradients(*(encoders[m] for m in trained))
    data = paired_records(plan.graph, stage.datasets, stage.modalities, registry, split="train")
    batching = engine.batching(len(data), settings.batch_size, config.seed + stage.index, "alignment.batch_size")
    temperature = LearnableTemperature(settings.temperature).to(device).requires_grad_(settings.learn_temperature)
    augmentations = {m: registry[m].augmentation() for m in stage.visual_invariant}
    compute = AlignmentStep(stage, encoders, augmentations, temperature, settings)
    parameters = trained_parameters(stage, {ParamGroup(m, Part.PROMPT_ENCODER): encoders[m].parameters()
                                            for m in stage.modalities})
    if settings.learn_temperature:
        parameters += list(temperature.parameters())
    optimizer = settings.optimiser(parameters)
    stateful = {**{m: encoders[m] for m in trained}, "temperature": temperature}

    def step_loss(shard: Shard):
        return compute(make_batch(data, shard.indices), shard, device)

    history, seconds = run_steps(stage, layout, stateful, optimizer, step_loss, settings.steps,
                                 settings.checkpoint_every, config.seed, batching, engine, settings.warmup_steps)

    for modality in trained:
        _freeze(encoders[modality])
        if engine.is_main:
            save_prompt_encoder(layout, modality, encoders[modality], config, stage.title)
    return complete_stage(layout, stage, stage_record(
        stage, len(data), settings.steps, seconds, history, config,
        stage_details={"visual_invariant": list(compute.visual_invariant)},
        temperature=float(temperature().detach()),
        validation=_validation_recall(plan.graph, stage, encoders, registry, device) if engine.is_main else None,
        encoders={m: str(layout.encoder(m)) for m in trained},
    ), engine)


def evaluation_manifest(plan: TrainingPlan, registry: ModalityRegistry, path: Path | None = None) -> Manifest:
    """The held-out manifest: ``path`` when given, else the one the graph's ``evaluation`` names."""
    if path is None:
        if plan.graph.evaluation is None:
            raise DataError(f"{plan.graph.source}: no 'evaluation' manifest named: cannot score held-out subjects")
        path = manifest_path(plan.graph, plan.graph.evaluation)
    return validate_manifest(read_manifest(path, registry), registry)


def evaluate_alignment(plan: TrainingPlan, registry: ModalityRegistry, config: RunConfig, run_dir: Path,
                       manifest: Manifest | None = None):
    """Held-out retrieval for every ordered pair of aligned modalities, written to ``RUN/eval``."""
    layout = RunLayout(run_dir)
    manifest = manifest or evaluation_manifest(plan, registry)
    encoders = load_prompt_encoders(registry, plan.aligned, config, layout)
    device = resolve_device(config.device)
    embeddings = held_out_embeddings(manifest, {m: e.to(device) for m, e in encoders.items()}, registry, device)
    rows = retrieval_table(plan, embeddings)
    write_retrieval(rows, layout.eval_dir)
    return rows


def align(run: Run) -> list[StageResult]:
    """Run (or resume) every alignment stage of the run's plan; aligned encoders land in ``RUN/encoders``."""
    plan, registry, config, layout = run.plan, run.registry, run.config, run.layout
    stages = plan.stages_of(StageKind.ALIGNMENT)
    encoders = {m: build_prompt_encoder(registry, m, config) for m in plan.aligned}
    results = []
    for stage in stages:
        record_path = layout.stage_record(stage)
        if record_path.is_file():
            trained = [group.modality for group in stage.trains]
            encoders.update(load_prompt_encoders(registry, trained, config, layout))
            results.append(StageResult(stage, read_json(record_path), skipped=True))
            logger.info("%s: already complete in %s", stage.title, layout.root)
            continue
        logger.info("stage %d/%d: %s on %s", stage.index, len(stages), stage.title, ", ".join(stage.datasets))
        record = run_alignment_stage(run, stage, encoders)
        results.append(StageResult(stage, record, skipped=False))
    return results
