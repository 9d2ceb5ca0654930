"""The ladder's third rung: can this modality's generator carry a finding at this budget at all?

An *oracle* LDM gets the structured finding itself as its condition: three tokens (type, side,
lobe), each a learned embedding, so nothing is lost before the denoiser. It is a fresh denoiser of
the run's size, trained on the run's frozen VAE latents of training subjects for the run's own LDM
steps, batch and learning rate; then it generates held-out subjects' findings and the image
reader scores them. Its score is the ceiling of every generation task into that modality at this
budget: a task far below it loses the finding in its condition, a ceiling near chance means the
generator needs more steps (or capacity) whatever it is conditioned on.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import torch
from torch import nn

from medm2g.core.diffusion.conditional import condition_context, conditional_sample
from medm2g.core.diffusion.schedule import training_scheduler, training_target
from medm2g.core.phantom.anatomy import Finding
from medm2g.core.phantom.image_findings import ImageFindingReader, image_finding_agreement
from medm2g.core.progress import progress
from medm2g.core.training.encoders import seeded_init

logger = logging.getLogger("medm2g")

ORACLE_FIELDS = ("kind", "side", "region")


class FindingTokens(nn.Module):
    """A finding as a (3, width) token sequence: one learned embedding per field value ("none" for
    a normal study's side and lobe)."""

    def __init__(self, findings: Sequence[Finding], width: int):
        super().__init__()
        self.values = {field: sorted({self.value(f, field) for f in findings}) for field in ORACLE_FIELDS}
        self.tables = nn.ModuleDict({field: nn.Embedding(len(values) + 1, width)  # + 1: a value never seen
                                     for field, values in self.values.items()})

    @staticmethod
    def value(finding: Finding, field: str) -> str:
        return str(getattr(finding, field) or "none")

    def forward(self, findings: Sequence[Finding]) -> torch.Tensor:
        device = next(self.parameters()).device
        columns = []
        for field in ORACLE_FIELDS:
            known = self.values[field]
            index = [known.index(self.value(f, field)) if self.value(f, field) in known else len(known) for f in findings]
            columns.append(self.tables[field](torch.tensor(index, device=device)))
        return torch.stack(columns, dim=1)


def oracle_scores(run, modality: str, reader: ImageFindingReader, train_images: Sequence[torch.Tensor],
                  train_findings: Sequence[Finding], test_findings: Sequence[Finding], steps: int | None = None,
                  seed: int = 0, sampling_steps: int | None = None) -> dict[str, float]:
    """Train an oracle-conditioned denoiser of ``modality`` (the run's LDM settings; ``steps`` to
    override) and score its samples for ``test_findings`` with ``reader``; adds ``seconds``."""
    config, device = run.config, run.device
    settings = config.ldm
    steps = steps or settings.steps
    started = time.perf_counter()
    vae = run.vae(modality)
    with seeded_init(seed, f"oracle {modality}"):  # fixed initial weights, the global random state untouched
        denoiser = run.registry[modality].unet(config.size, config.embed_dim,
                                               config.model_options(modality, "unet")).to(device).train()
        tokens = FindingTokens(train_findings, config.embed_dim).to(device)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        latents = torch.cat([vae.encode(torch.stack(list(train_images[i:i + 32])).to(device), generator=generator).float()
                             for i in range(0, len(train_images), 32)])
    scheduler = training_scheduler(config.diffusion)
    optimiser = settings.optimiser([*denoiser.parameters(), *tokens.parameters()])
    for _ in progress(range(steps), desc=f"oracle LDM {modality}", unit="step", total=steps):
        batch = torch.randint(0, len(latents), (settings.batch_size,), generator=generator)
        z0 = latents[batch]
        noise = torch.randn(z0.shape, generator=generator).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),), generator=generator).to(device)
        keep = (torch.rand(len(batch), generator=generator) >= config.diffusion.condition_dropout).to(device)
        context = condition_context(tokens([train_findings[i] for i in batch.tolist()]), keep)
        predicted = denoiser(scheduler.add_noise(z0, noise, t), t, context)
        loss = nn.functional.mse_loss(predicted.float(), training_target(scheduler, z0, noise, t).float())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        optimiser.step()
    denoiser.eval()
    images = []
    with torch.no_grad():
        for start in range(0, len(test_findings), 16):
            chunk = list(test_findings[start:start + 16])
            sampled = conditional_sample(denoiser, tokens(chunk), tuple(run.registry[modality].spec.latent_shape),
                                         config.diffusion, torch.Generator().manual_seed(seed + start),
                                         steps=sampling_steps)
            images += list(vae.decode(sampled).float().clamp(-1, 1).cpu())
    scores = image_finding_agreement(reader, images, test_findings)
    scores["seconds"] = round(time.perf_counter() - started, 1)
    scores["steps"] = steps
    logger.info("oracle LDM %s: %d steps, side %.2f, lobe %.2f (%.0f s)", modality, steps,
                scores.get("side_accuracy", float("nan")), scores.get("region_accuracy", float("nan")), scores["seconds"])
    return scores
