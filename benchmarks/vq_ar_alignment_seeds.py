"""How reliably the vq-ar word-patch alignment lands a lesion term on the lesion, across seeds.

One seed's key-patch hit rate says little: retrained from other seeds, the alignment of one
codebook moved between 0.03 and 0.34 before its patches carried their asymmetry. This retrains
only the alignment of a trained ``vq-ar`` run (its codebook and prompts are reused as they are)
with the stage's own step function, once per seed, and scores each on the run's held-out subjects
with ``medm2g eval``'s measure; ``--saliency 0`` and ``--typical-share 0`` switch off the two
things that keep a term off the lesion's mirror place. Prints a table and writes
results/vq_ar_alignment_seeds.json.

    python benchmarks/vq_ar_alignment_seeds.py RUN [--seeds 0 1 2 3] [--steps 800] [--subjects 120]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import attrs
import torch

from medm2g.core.backends.vq_ar.evaluation import held_out_cases, lesion_term_hits, read_cases
from medm2g.core.backends.vq_ar.stage import BACKEND, build_vq_ar, edge_prompts, load_trained_vq_ar
from medm2g.core.backends.vq_ar.training import alignment_step
from medm2g.core.backends.vq_ar.transformer import PROMPT_LENGTH
from medm2g.core.data.manifest import read_manifest
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.phantom.image_findings import fit_reader
from medm2g.core.training.data import manifest_path, paired_records, training_manifests
from medm2g.registry import load_modalities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--steps", type=int, help="alignment steps (default: the run's)")
    parser.add_argument("--saliency", type=float, help="vq_ar.alignment_saliency (default: the run's)")
    parser.add_argument("--typical-share", type=float, help="vq_ar.typical_mirror_share (default: the run's)")
    parser.add_argument("--subjects", type=int, default=120)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "vq_ar_alignment_seeds.json")
    args = parser.parse_args()

    run = TrainedRun.open(args.run, load_modalities(), device="cpu")
    settings = run.config.vq_ar
    chosen = (("alignment_steps", args.steps), ("alignment_saliency", args.saliency),
              ("typical_mirror_share", args.typical_share))
    settings = attrs.evolve(settings, **{key: value for key, value in chosen if value is not None})
    config = attrs.evolve(run.config, vq_ar=settings)
    ((_, edge),) = [(s, e) for s, e in run.plan.translation_stages() if e.backend == BACKEND]
    trained = load_trained_vq_ar(run.registry, edge.a, edge.b, run.config, run.layout)
    prompts = edge_prompts(run.registry, config)
    graph = run.plan.graph
    data = paired_records(graph, edge.dataset, (trained.text, trained.image), run.registry, split="train")
    images = torch.stack([record[trained.image].float() for record in data])
    rows, masks = trained.tokens.padded([prompts.prompt(record[trained.text]).text for record in data], PROMPT_LENGTH)
    codes, mirrored = trained.patch_codes(images)
    evaluation = read_manifest(manifest_path(graph, graph.evaluation), run.registry)
    cases = held_out_cases(evaluation, trained.text, trained.image, run.registry, args.subjects)
    reader = fit_reader(training_manifests(graph, run.registry), trained.image, run.registry)

    results = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        model = build_vq_ar(run.registry, edge.a, edge.b, config, prompts)
        model.codebook.load_state_dict(trained.codebook.state_dict())
        model.alignment.learn_typical(model.codebook.embed(mirrored))
        optimizer = torch.optim.Adam(model.alignment.parameters(), lr=settings.alignment_learning_rate)
        step = alignment_step(model, torch.tensor(rows), torch.tensor(masks), codes, mirrored, optimizer, "cpu")
        started = time.perf_counter()
        model.alignment.train()
        for index in range(settings.alignment_steps):
            step(index, torch.Generator().manual_seed(seed * 1_000_003 + index))
        model.eval()
        hits = lesion_term_hits(model, read_cases(model, prompts, cases), reader.search if reader else None)
        results.append({"seed": seed, "seconds": round(time.perf_counter() - started, 1), **hits})
        print(f"seed {seed}: on the image {hits['hit_on_image']:.2f}, as the first key patch {hits['hit_as_key']:.2f}, "
              f"on the mirror place {hits['mirror_hit_on_image']:.2f}, chance {hits['chance']:.3f} "
              f"(n {hits['hit_on_image_n']})", flush=True)
    summary = {key: (statistics.mean(r[key] for r in results), min(r[key] for r in results),
                     max(r[key] for r in results)) for key in ("hit_on_image", "hit_as_key", "mirror_hit_on_image")}
    print(" | ".join(f"{key} mean {m:.2f} (min {lo:.2f}, max {hi:.2f})" for key, (m, lo, hi) in summary.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run": str(args.run), "steps": settings.alignment_steps,
                                    "saliency": settings.alignment_saliency,
                                    "typical_mirror_share": settings.typical_mirror_share,
                                    "seeds": results, "summary": summary}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
