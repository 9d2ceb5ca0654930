"""Joint sampling: k modalities generated together (each attending to the others' latents at
every step) against k separate single-modality samplings, from one condition.

    python benchmarks/joint_sampling.py RUN [--steps 25] [--rows 4] [--repeats 2]

RUN is a trained run folder with its rounds (``medm2g demo --out RUN``). Prints a table and
writes results/joint_sampling.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medm2g.core.generation.backends import CrossGuidedGenerator, GenerationRequest
from medm2g.core.generation.conditions import Condition
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.registry import load_modalities

REPORT = "Findings: a 30 mm infarct is seen in the right occipital lobe. Impression: right occipital infarct."


def timed(generator: CrossGuidedGenerator, request: GenerationRequest) -> float:
    started = time.perf_counter()
    generator.generate(request)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--rows", type=int, default=4, help="samples per request")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "joint_sampling.json")
    args = parser.parse_args()
    run = TrainedRun.open(args.run, load_modalities(), device=args.device)
    generator = CrossGuidedGenerator(run)
    outputs = [m for m in run.jointly_generatable()]
    condition = Condition("text", REPORT, "text report")
    common = dict(conditions=[condition], samples_per_condition=args.rows, steps=args.steps, batch_size=args.rows)
    timed(generator, GenerationRequest(outputs=outputs[:1], **common))  # warm-up: loads the models
    rows = []
    for k in range(2, len(outputs) + 1):
        chosen = outputs[:k]
        joint = min(timed(generator, GenerationRequest(outputs=chosen, joint=True, **common))
                    for _ in range(args.repeats))
        separate = min(sum(timed(generator, GenerationRequest(outputs=[m], **common)) for m in chosen)
                       for _ in range(args.repeats))
        rows.append({"k": k, "outputs": chosen, "joint_seconds": round(joint, 3), "separate_seconds": round(separate, 3),
                     "ratio": round(joint / separate, 3)})
        print(f"k={k} {','.join(chosen)}: joint {joint:.2f} s, separately {separate:.2f} s", flush=True)
    print(f"\n| k | outputs | joint s | k single samplings s | joint / separate |  ({args.rows} rows, "
          f"{args.steps} DDIM steps, {run.device})")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['k']} | {', '.join(r['outputs'])} | {r['joint_seconds']:.2f} | {r['separate_seconds']:.2f} | "
              f"{r['ratio']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run": str(args.run.resolve()), "device": str(run.device), "rows_per_request": args.rows,
                                    "steps": args.steps, "results": rows}, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
