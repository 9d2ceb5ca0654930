"""What ``medm2g eval`` measures of a ``vq-ar`` edge beside its generation row: the codebook and
the alignment, on held-out subjects.

* **Codebook**: reconstruction error (L1, PSNR) of the held-out images through their tokens, and
  the codebook's usage on them.
* **Key-patch hit rate**: for each held-out subject with a lesion, is the patch the alignment
  ranks first for the report's lesion term inside that subject's lesion mask? Twice: on the
  subject's own image (the heat map's peak), and as the prompt's first key patch, chosen with no
  image at all (what the transformer is given). Chance is the share of the lesion-bearing area's
  patches that overlap the mask (a patch drawn at random there hits that often). Beside it, how
  often the peak lands on the lesion's mirror place instead: as asymmetric as the lesion, the
  alignment's likeliest wrong answer.
* **Heat maps**: each prompt term's matches (similarity and saliency prior) over a few held-out
  images, the lesion outlined
  (``vq-ar-heat-maps.png``), which shows whether "left occipital lobe" lands on the left occipital lobe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import attrs
import torch
import torch.nn.functional as F

from medm2g.core.backends.vq_ar.alignment import heat_map, key_patches
from medm2g.core.backends.vq_ar.model import PromptCondition, VQAutoregressive
from medm2g.core.backends.vq_ar.stage import BACKEND, edge_prompts, load_trained_vq_ar
from medm2g.core.backends.vq_ar.training import reconstruction_error
from medm2g.core.data.manifest import Manifest
from medm2g.core.data.paired_dataset import PairedDataset
from medm2g.core.io.checkpoints import write_json, write_text_atomically
from medm2g.core.metrics.proportion import Proportion, format_proportion
from medm2g.core.phantom.image_findings import fit_reader, lesion_mask_of
from medm2g.core.prompting.for_run import RunPrompts
from medm2g.core.training.data import training_manifests

HEAT_MAP_SUBJECTS = 4


@attrs.frozen
class HeldOutCase:
    subject: str
    report: str
    image: torch.Tensor  # (C, H, W)
    mask: torch.Tensor | None  # (H, W) bool, None outside a phantom cohort


def cells(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """(grid, grid) bool: the patches of a (H, W) mask that hold any of it."""
    return F.adaptive_max_pool2d(mask[None, None].float(), grid)[0, 0] > 0


def held_out_cases(manifest: Manifest, text: str, image: str, registry, limit: int) -> list[HeldOutCase]:
    dataset = PairedDataset(manifest, [text, image], registry, split=None)
    cases = []
    for index in range(min(limit, len(dataset))):
        item, record = dataset[index], dataset.records[index]
        mask = lesion_mask_of(manifest, record, image, tuple(item[image].shape[-2:]))
        cases.append(HeldOutCase(item["subject_id"], item[text], item[image].float(), mask))
    return cases


@attrs.frozen
class CaseReading:
    """What the alignment makes of one held-out case, computed once for the hit rates and the picture:
    the report's prompt condition, its word vectors, and the image's and its mirror's codebook vectors."""

    case: HeldOutCase
    condition: PromptCondition
    words: torch.Tensor  # (L, dim)
    codes: torch.Tensor  # (code_dim, grid, grid)
    mirrored: torch.Tensor  # (code_dim, grid, grid)

    def heat_map(self, model: VQAutoregressive, term: str) -> torch.Tensor:
        vector = model.alignment.term_vector(self.words, self.condition.terms[term])
        return heat_map(model.alignment, vector, self.codes, self.mirrored)


@torch.no_grad()
def read_cases(model: VQAutoregressive, prompts: RunPrompts, cases: Sequence[HeldOutCase]) -> list[CaseReading]:
    device = model.alignment.positions.device
    codes, mirrored = model.patch_codes(torch.stack([case.image for case in cases]))
    conditions = model.prompt_conditions([case.report for case in cases], prompts)
    readings = []
    for index, (case, condition) in enumerate(zip(cases, conditions)):
        tokens = torch.tensor([condition.ids or [0]], device=device)
        words = model.alignment.word_vectors(tokens, torch.ones_like(tokens, dtype=torch.bool))[0]
        readings.append(CaseReading(case, condition, words, model.codebook.embed(codes[index:index + 1])[0],
                                    model.codebook.embed(mirrored[index:index + 1])[0]))
    return readings


@torch.no_grad()
def lesion_term_hits(model: VQAutoregressive, readings: Sequence[CaseReading], search: torch.Tensor | None) -> dict:
    """Hit rates of the lesion term's top patch (on the image, and as the first key patch) with chance;
    ``mirror_hit_on_image``: how often the top patch lands on the lesion's mirror place instead."""
    grid = model.codebook.grid
    on_image, on_mirror, as_key, chances = 0, 0, 0, []
    every = model.alignment.every_patch(model.codebook.codes)
    for reading in readings:
        case, condition = reading.case, reading.condition
        if case.mask is None or not case.mask.any():
            continue
        pathologies = [t.canonical for t in condition.prompt.report.pathologies(negated=False)]
        term = next((t for t in pathologies if t in condition.terms), None)
        if term is None:
            continue
        lesion, mirror = cells(case.mask, grid).flatten(), cells(case.mask.flip(-1), grid).flatten()
        area = cells(search, grid) if search is not None else torch.ones(grid, grid, dtype=torch.bool)
        peak = int(reading.heat_map(model, term).flatten().argmax())
        vector = model.alignment.term_vector(reading.words, condition.terms[term])
        key_position, _ = key_patches(model.alignment, vector, model.codebook.codes, 1, every)[0]
        on_image += bool(lesion[peak])
        on_mirror += bool(mirror[peak] and not lesion[peak])
        as_key += bool(lesion[key_position])
        chances.append(float((lesion.view(grid, grid) & area).sum()) / max(1.0, float(area.sum())))
    judged = len(chances)
    return {**Proportion(on_image, judged).as_scores("hit_on_image"),
            **Proportion(as_key, judged).as_scores("hit_as_key"),
            **Proportion(on_mirror, judged).as_scores("mirror_hit_on_image"),
            "chance": sum(chances) / len(chances) if chances else float("nan"), "grid": grid}


def draw_heat_maps(model: VQAutoregressive, readings: Sequence[CaseReading], path: Path, title: str) -> Path | None:
    """Rows of held-out images (lesion outlined) with each prompt term's word-patch matches over them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [reading for reading in readings if reading.condition.terms][:HEAT_MAP_SUBJECTS]
    if not rows:
        return None
    columns = 1 + max(len(r.condition.terms) for r in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.3 * columns, 2.5 * len(rows)), squeeze=False)
    for row, reading in enumerate(rows):
        case, condition = reading.case, reading.condition
        picture = case.image.mean(0).numpy()
        axes[row][0].imshow(picture, cmap="gray", vmin=-1, vmax=1)
        axes[row][0].set_title(f"{case.subject}: {condition.prompt.text}"[:48], fontsize=6)
        for column, term in enumerate(condition.terms, start=1):
            similarities = reading.heat_map(model, term).cpu()
            upsampled = F.interpolate(similarities[None, None], size=picture.shape, mode="bilinear",
                                      align_corners=False)[0, 0].numpy()
            axis = axes[row][column]
            axis.imshow(picture, cmap="gray", vmin=-1, vmax=1)
            axis.imshow(upsampled, cmap="inferno", alpha=0.55)
            peak = int(similarities.flatten().argmax())
            scale = picture.shape[0] / similarities.shape[0]
            axis.scatter([(peak % similarities.shape[1] + 0.5) * scale - 0.5],
                         [(peak // similarities.shape[1] + 0.5) * scale - 0.5], marker="+", c="cyan", s=40)
            axis.set_title(f'"{term}"', fontsize=7)
        for axis in axes[row][:1 + len(condition.terms)]:
            if case.mask is not None and case.mask.any():
                axis.contour(case.mask.numpy().astype(float), levels=[0.5], colors="lime", linewidths=0.6)
        for axis in axes[row]:
            axis.axis("off")
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def evaluate_vq_ar(run, plan, manifest: Manifest, subjects: int, folder: Path) -> dict[str, Path]:
    """The codebook, hit rates and heat maps of every completed vq-ar edge of ``run`` on ``subjects``
    held-out subjects of ``manifest``; writes ``vq-ar.json``, ``vq-ar.md`` and ``vq-ar-heat-maps.png``."""
    edges = [edge for stage, edge in plan.translation_stages() if edge.backend == BACKEND and run.completed(stage)]
    if not edges:
        return {}
    prompts = edge_prompts(run.registry, run.config)
    results, pictures = {}, {}
    for edge in edges:
        model = load_trained_vq_ar(run.registry, edge.a, edge.b, run.config, run.layout).to(run.device)
        if model.text not in manifest.modalities or model.image not in manifest.modalities:
            continue
        cases = held_out_cases(manifest, model.text, model.image, run.registry, subjects)
        reader = fit_reader(training_manifests(plan.graph, run.registry), model.image, run.registry)
        label = f"{model.text}->{model.image}"
        readings = read_cases(model, prompts, cases)
        results[label] = {"subjects": len(cases),
                          "codebook": reconstruction_error(model, torch.stack([c.image for c in cases]), run.device),
                          "alignment": lesion_term_hits(model, readings, reader.search if reader is not None else None)}
        pictures[label] = draw_heat_maps(model, readings, folder / f"vq-ar-heat-maps-{model.image}.png",
                                         f"word-patch matches (similarity + saliency prior), {label} "
                                         f"(held-out; lesion outlined, + the peak)")
    if not results:
        return {}
    written = {"vq_ar_json": write_json(folder / "vq-ar.json", results),
               "vq_ar_md": write_text_atomically(folder / "vq-ar.md", vq_ar_markdown(results))}
    written.update({f"vq_ar_heat_maps_{label}": path for label, path in pictures.items() if path is not None})
    return written


def vq_ar_markdown(results: dict) -> str:
    lines = ["vq-ar: codebook and word-patch alignment on held-out subjects", "",
             "| task | n | codebook L1 | PSNR | codes used | perplexity | lesion term's top patch in the lesion: "
             "on the image [95% CI] | as the first key patch (no image) | chance | on its mirror place instead |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, result in results.items():
        codebook, hits = result["codebook"], result["alignment"]
        lines.append(f"| {label} | {hits['hit_on_image_n']} | {codebook['l1']:.3f} | {codebook['psnr']:.2f} | "
                     f"{codebook['codes_used']:.2f} | {codebook['perplexity']:.1f} | "
                     f"{format_proportion(hits, 'hit_on_image')} | {format_proportion(hits, 'hit_as_key')} | "
                     f"{hits['chance']:.2f} | {format_proportion(hits, 'mirror_hit_on_image')} |")
    return "\n".join(lines) + "\n"
