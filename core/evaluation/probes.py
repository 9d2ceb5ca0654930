"""Where the finding is lost: a ladder of diagnostics from the condition to the generated image.

A generator that ignores its condition can fail at any of several depths, and each calls for a
different fix. For data with known findings (the phantom cohort, or any cohort with a
``finding.json`` per subject) this module measures, rung by rung:

1. **condition**: is the finding in the frozen prompt embedding C_M? A linear probe (multinomial
   logistic regression, fitted on training subjects' embeddings, scored on held-out ones) of the
   finding's type, side and lobe;
2. **VAE**: does the autoencoder keep it? The image reader on VAE reconstructions of held-out
   truth images, beside the reader on the truth itself (its ceiling);
3. **oracle**: can the generator carry it at this budget at all? An LDM conditioned on the
   structured finding itself, trained for the run's LDM steps (:mod:`.oracle`, asked for per
   modality: it trains);
4. **generation**: does the generator use it? The reader on generated images (from the
   generation scores).

A rung far below the one before it is where the finding is lost. Every number is a proportion
of n held-out subjects with its Wilson interval and the chance level beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import attrs
import torch

from medm2g.core.data.manifest import Manifest
from medm2g.core.data.paired_dataset import PairedDataset
from medm2g.core.evaluation.generation_eval import finding_readers
from medm2g.core.evaluation.oracle import oracle_scores
from medm2g.core.io.checkpoints import write_json
from medm2g.core.metrics.image import psnr, ssim
from medm2g.core.metrics.proportion import Proportion, format_proportion
from medm2g.core.metrics.retrieval import embed
from medm2g.core.phantom.anatomy import Finding
from medm2g.core.phantom.image_findings import ImageFindingReader, image_finding_agreement, subject_finding
from medm2g.core.training.data import training_manifests

PROBE_FIELDS = ("kind", "side", "region")
"""What a probe reads from an embedding: the finding's type (normal included), and for lesioned
subjects its side and lobe."""
PROBE_TRAINING_LIMIT = 400
"""Training subjects a probe is fitted on, per modality: enough for a linear map of a few hundred
dimensions at the L2 strength below, and seconds on a CPU."""


@attrs.frozen(eq=False)
class LinearProbe:
    """Multinomial logistic regression on standardised features."""

    classes: tuple[str, ...]
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def predict(self, features: torch.Tensor) -> list[str]:
        logits = ((features.float() - self.mean) / self.scale) @ self.weight.T + self.bias
        return [self.classes[i] for i in logits.argmax(1).tolist()]


def fit_linear_probe(features: torch.Tensor, labels: Sequence[str], l2: float = 1e-2,
                     iterations: int = 100) -> LinearProbe:
    """A probe fitted by L-BFGS (deterministic: zero start, full batch); ``l2`` on the weights keeps it
    from memorising few subjects in many dimensions."""
    if len(features) != len(labels) or not len(labels):
        raise ValueError(f"need one label per feature row, got {len(features)} rows and {len(labels)} labels")
    classes = tuple(sorted(set(labels)))
    x = features.detach().float().cpu()
    mean, scale = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    x = (x - mean) / scale
    y = torch.tensor([classes.index(label) for label in labels])
    weight = torch.zeros(len(classes), x.shape[1], requires_grad=True)
    bias = torch.zeros(len(classes), requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    if len(classes) > 1:
        optimiser.step(closure)
    return LinearProbe(classes, mean, scale, weight.detach(), bias.detach())


def probe_scores(train: torch.Tensor, train_labels: Sequence[str], test: torch.Tensor,
                 test_labels: Sequence[str]) -> dict[str, float]:
    """Held-out accuracy of a probe fitted on ``train`` (with its interval), and chance: the held-out
    accuracy of always answering the training set's most frequent label."""
    probe = fit_linear_probe(train, train_labels)
    predicted = probe.predict(test)
    majority = max(sorted(set(train_labels)), key=list(train_labels).count)
    correct = sum(p == t for p, t in zip(predicted, test_labels))
    return {**Proportion(correct, len(test_labels)).as_scores("accuracy"),
            "chance": sum(t == majority for t in test_labels) / len(test_labels)}


def _label(finding: Finding, field: str) -> str | None:
    if field == "kind":
        return finding.kind
    return None if finding.is_normal else getattr(finding, field)


def labelled_samples(manifests: Sequence[Manifest], modality: str, registry, split: str | None,
                     limit: int) -> tuple[list, list[Finding]]:
    """Up to ``limit`` samples of ``modality`` (one per subject) from ``manifests`` with the subject's
    known finding, in model space as the encoders see them."""
    samples, findings, seen = [], [], set()
    for manifest in manifests:
        records = manifest.having(modality, split=split)
        if not records:
            continue
        dataset = PairedDataset(manifest, [modality], registry, split=split)
        for index, record in enumerate(dataset.records):
            if len(samples) >= limit:
                return samples, findings
            if record.subject_id in seen:
                continue
            finding = subject_finding(manifest.resolve(record.values[modality]))
            if finding is None:
                continue
            seen.add(record.subject_id)
            samples.append(dataset[index][modality])
            findings.append(finding)
    return samples, findings


def condition_probes(run, plan, manifest: Manifest, subjects: int,
                     limit: int = PROBE_TRAINING_LIMIT) -> dict[str, dict[str, dict[str, float]]]:
    """modality -> field -> probe scores, for every modality the run conditions on (rung 1)."""
    training = training_manifests(plan.graph, run.registry)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for modality in run.conditionable():
        train_samples, train_findings = labelled_samples(training, modality, run.registry, "train", limit)
        test_samples, test_findings = labelled_samples([manifest], modality, run.registry, None, subjects)
        if len(train_findings) < 4 or not test_findings:
            continue
        encoder = run.encoder(modality)
        train_x, test_x = embed(encoder, train_samples, run.device), embed(encoder, test_samples, run.device)
        for field in PROBE_FIELDS:
            train_rows = [i for i, f in enumerate(train_findings) if _label(f, field) is not None]
            test_rows = [i for i, f in enumerate(test_findings) if _label(f, field) is not None]
            if len({_label(train_findings[i], field) for i in train_rows}) < 2 or not test_rows:
                continue
            results.setdefault(modality, {})[field] = probe_scores(
                train_x[train_rows], [_label(train_findings[i], field) for i in train_rows],
                test_x[test_rows], [_label(test_findings[i], field) for i in test_rows])
    return results


@torch.no_grad()
def vae_reader_scores(run, reader: ImageFindingReader, images: Sequence[torch.Tensor],
                      findings: Sequence[Finding | None], seed: int = 0) -> dict[str, float]:
    """The reader on VAE reconstructions of ``images`` (rung 2): side and lobe, with intervals; and
    their PSNR and SSIM against the images, the fidelity ceiling of every generation task into this
    modality (a latent translation cannot be closer to the truth than the VAE's own reconstruction)."""
    vae = run.vae(reader.modality)
    generator = torch.Generator().manual_seed(seed)
    reconstructions = []
    for start in range(0, len(images), 16):
        batch = torch.stack(list(images[start:start + 16])).to(run.device)
        latents = vae.encode(batch, generator=generator)  # the LatentVAE protocol's
        reconstructions += list(vae.decode(latents).float().clamp(-1, 1).cpu())
    scores = image_finding_agreement(reader, reconstructions, findings)
    truth, rebuilt = torch.stack([image.float().cpu() for image in images]), torch.stack(reconstructions)
    scores.update({"psnr": float(psnr(rebuilt, truth).mean()), "ssim": float(ssim(rebuilt, truth).mean())})
    return scores


LADDER_FIELDS = ("side", "region")


def format_ladder(ladder: Mapping) -> str:
    """The "where the finding is lost" table: one row per rung, side and lobe, with n, interval and chance."""
    lines = ["| rung | modality | what is read | n | type (chance) | side (chance) | lobe (chance) |",
             "|---|---|---|---|---|---|---|"]

    def cell(scores: Mapping | None, name: str = "accuracy", chance: str = "chance") -> str:
        if not scores or name not in scores:
            return "-"
        return f"{format_proportion(scores, name)} ({scores[chance]:.2f})"

    for modality, fields in ladder.get("condition", {}).items():
        n = max(int(f.get("accuracy_n", 0)) for f in fields.values())
        lines.append(f"| 1 condition | {modality} | linear probe on frozen C_{modality} | {n} | "
                     + " | ".join(cell(fields.get(f)) for f in PROBE_FIELDS) + " |")
    for modality, scores in ladder.get("vae", {}).items():
        for what, prefix in (("reader on the truth images (ceiling)", "truth"), ("reader on VAE reconstructions", "vae")):
            row = scores.get(prefix, {})
            if "psnr" in row:
                what += f" (PSNR {row['psnr']:.1f} dB, SSIM {row['ssim']:.2f}: the fidelity ceiling)"
            lines.append(f"| 2 VAE | {modality} | {what} | {int(row.get('side_accuracy_n', 0))} | - | "
                         + " | ".join(cell(row, f"{f}_accuracy", f"{f}_chance") for f in LADDER_FIELDS) + " |")
    for modality, row in ladder.get("oracle", {}).items():
        lines.append(f"| 3 oracle | {modality} | reader on an LDM conditioned on the finding itself "
                     f"({row.get('steps')} steps) | {int(row.get('side_accuracy_n', 0))} | - | "
                     + " | ".join(cell(row, f"{f}_accuracy", f"{f}_chance") for f in LADDER_FIELDS) + " |")
    for task, row in ladder.get("generation", {}).items():
        lines.append(f"| 4 generation | {task} | reader on generated images | {int(row.get('side_accuracy_n', 0))} | - | "
                     + " | ".join(cell(row, f"{f}_accuracy", f"{f}_chance") for f in LADDER_FIELDS) + " |")
    return "\n".join(lines) + "\n"


def write_ladder(ladder: Mapping, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "finding-ladder.md"
    table.write_text("# Where the finding is lost\n\n" + format_ladder(ladder), encoding="utf-8")
    return {"json": write_json(folder / "finding-ladder.json", ladder), "table": table}


def finding_ladder(run, plan, manifest: Manifest, subjects: int, generation: Sequence, seed: int = 0,
                   oracle: Sequence[str] = ()) -> dict:
    """Every rung for this run on ``subjects`` held-out subjects of ``manifest``: the condition
    probes, the reader on truth images and on their VAE reconstructions, an oracle-conditioned LDM
    for the imaging modalities named in ``oracle`` (:mod:`.oracle`; it trains, so it is asked for),
    and the generation scores already computed (``generation``: the evaluation's TaskScore rows)."""
    ladder: dict = {"condition": condition_probes(run, plan, manifest, subjects), "vae": {}, "oracle": {},
                    "generation": {}}
    targets = [m for m in run.generatable() if run.registry[m].spec.kind.is_imaging and manifest.having(m)]
    training = training_manifests(plan.graph, run.registry)
    for modality, reader in finding_readers(plan, run.registry, targets).items():
        images, findings = labelled_samples([manifest], modality, run.registry, None, subjects)
        if not findings:
            continue
        ladder["vae"][modality] = {"truth": image_finding_agreement(reader, images, findings),
                                   "vae": vae_reader_scores(run, reader, images, findings, seed)}
        if modality in oracle:
            train_images, train_findings = labelled_samples(training, modality, run.registry, "train",
                                                            PROBE_TRAINING_LIMIT)
            ladder["oracle"][modality] = oracle_scores(run, modality, reader, train_images, train_findings, findings,
                                                       seed=seed)
    for row in generation:
        if "side_accuracy" in row.scores and row.target in ladder["vae"]:
            ladder["generation"][f"{row.source} -> {row.target}"] = {
                k: v for k, v in row.scores.items() if k.startswith(("side_", "region_"))}
    return ladder
