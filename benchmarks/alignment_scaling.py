"""Alignment cost as the number of modalities grows: the central star against all pairs.

For n = 2..16 synthetic modalities (a chain of paired data plus every modality paired with the
centre, as a researcher adding modalities one at a time would have), the real graph engine
plans the star; each alignment edge is then trained for the same number of steps with the real
InfoNCE loss (eq. 3) on small encoders over synthetic paired features, once along the star's
edges and once along every pair. Prints a table and writes results/alignment_scaling.json.

    python benchmarks/alignment_scaling.py [--max-modalities 16] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from medm2g.core.graph.engine import build_plan
from medm2g.core.graph.pair_graph import PairEdge, PairGraph
from medm2g.core.models.losses import symmetric_info_nce

FEATURES, WIDTH, EMBED, BATCH = 64, 128, 64, 32


def synthetic_graph(n: int) -> PairGraph:
    names = [f"m{i:02d}" for i in range(n)]
    pairs = [PairEdge(names[0], name, f"{names[0]}-{name}.csv") for name in names[1:]]
    return PairGraph(modalities=tuple(names), pairs=tuple(pairs), center=names[0])


def encoder() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, WIDTH), nn.GELU(), nn.Linear(WIDTH, EMBED))


def train_edges(edges: list[tuple[str, str]], steps: int, seed: int) -> float:
    """Seconds to train every edge for ``steps`` InfoNCE steps (fresh encoders per modality, shared)."""
    torch.manual_seed(seed)
    names = sorted({name for edge in edges for name in edge})
    encoders = {name: encoder() for name in names}
    truth = torch.randn(BATCH * 4, FEATURES)
    views = {name: truth @ torch.randn(FEATURES, FEATURES) / FEATURES ** 0.5 for name in names}
    started = time.perf_counter()
    for a, b in edges:
        optimizer = torch.optim.AdamW([*encoders[a].parameters(), *encoders[b].parameters()], lr=1e-3)
        for step in range(steps):
            rows = torch.randint(len(truth), (BATCH,))
            loss = symmetric_info_nce(encoders[a](views[a][rows]), encoders[b](views[b][rows]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


def linear_fit(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Least-squares slope, intercept and R^2 of y against x."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxx = sum((a - mx) ** 2 for a in x)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx
    intercept = my - slope * mx
    total = sum((b - my) ** 2 for b in y)
    residual = sum((b - (intercept + slope * a)) ** 2 for a, b in zip(x, y))
    return slope, intercept, 1 - residual / total if total else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-modalities", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="each timing is the fastest of this many (noise on 2 cores)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "alignment_scaling.json")
    args = parser.parse_args()
    train_edges([("w0", "w1")], args.steps, 0)  # warm-up: first-call allocations are not alignment cost
    rows = []
    for n in range(2, args.max_modalities + 1):
        plan = build_plan(synthetic_graph(n))
        star = [(edge.via, edge.modality) for edge in plan.star]
        names = list(plan.graph.modalities)
        all_pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        rows.append({"modalities": n, "star_edges": len(star), "all_pairs_edges": len(all_pairs),
                     "star_seconds": round(min(train_edges(star, args.steps, n) for _ in range(args.repeats)), 3),
                     "all_pairs_seconds": round(min(train_edges(all_pairs, args.steps, n)
                                                    for _ in range(args.repeats)), 3)})
        print(f"n={n:2d}  star {rows[-1]['star_edges']:3d} edges {rows[-1]['star_seconds']:7.2f} s   "
              f"all pairs {rows[-1]['all_pairs_edges']:3d} edges {rows[-1]['all_pairs_seconds']:7.2f} s", flush=True)
    # linearity: seconds against n for the star (a line), against n^2 for all pairs
    star_fit = linear_fit([r["modalities"] for r in rows], [r["star_seconds"] for r in rows])
    pairs_fit = linear_fit([r["modalities"] for r in rows], [r["all_pairs_seconds"] for r in rows])
    per_edge = [r["star_seconds"] / r["star_edges"] for r in rows]
    summary = {"star_seconds_per_edge_min": round(min(per_edge), 4), "star_seconds_per_edge_max": round(max(per_edge), 4),
               "star_linear_fit_r2": round(star_fit[2], 4), "star_seconds_per_added_modality": round(star_fit[0], 4),
               "all_pairs_linear_fit_r2": round(pairs_fit[2], 4),
               "steps_per_edge": args.steps, "repeats": args.repeats, "batch": BATCH, "threads": torch.get_num_threads()}
    print("\n| modalities | star edges | star s | all-pairs edges | all-pairs s | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['modalities']} | {r['star_edges']} | {r['star_seconds']:.2f} | {r['all_pairs_edges']} | "
              f"{r['all_pairs_seconds']:.2f} | {r['all_pairs_seconds'] / r['star_seconds']:.1f} |")
    print(f"\nstar: {summary['star_seconds_per_added_modality']:.3f} s per added modality, straight-line fit "
          f"R^2 {summary['star_linear_fit_r2']:.3f} (all pairs: R^2 {summary['all_pairs_linear_fit_r2']:.3f}, quadratic); "
          f"seconds per edge {summary['star_seconds_per_edge_min']}-{summary['star_seconds_per_edge_max']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
