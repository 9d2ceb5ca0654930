"""The quick demo beside CPU-bound neighbours: wall time, and the CPU time it spent in user and
system mode, idle and with 1 or 2 busy processes on the machine: ``python -c 'while True: pass'``,
or with ``--neighbour torch`` a PyTorch matrix product in a loop (another ML job, whose OpenMP
threads spin as medm2g's did).

Each measurement is bounded (``--timeout``: the demo's process group is killed past it and the
row says so), and the busy processes are killed after each one. The load average before and
after each row is recorded: on a shared machine other people's work is in it too.

    python benchmarks/busy_neighbours.py [--busy 0 1 2] [--neighbour python|torch] [--timeout 900] [--label after]

Runs ``python -m medm2g.core.apps.cli demo --quick --out TMP``, with the environment it is
given (set ``PYTHONPATH`` to measure another checkout, ``OMP_WAIT_POLICY`` to override). Prints a
Markdown table and appends JSON rows to results/busy_neighbours.json.

    python benchmarks/busy_neighbours.py --steps 40 [--busy 0 1 2] [--neighbour python|torch] [--repeats 2]

measures training steps instead, which is quicker and shows stalls: a fresh process trains the
CPU-size CT denoiser (batch 8) for that many steps and reports the median, 90th percentile and
longest step, once as medm2g started before this change (the libraries' defaults) and once after
(:func:`medm2g.core.threads.configure_threads` first), alternated, ``--repeats`` times each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY = {
    "python": [sys.executable, "-c", "while True: pass"],
    # another PyTorch job with the libraries' default thread settings (its OpenMP threads spin too)
    "torch": [sys.executable, "-c", "import torch\na = torch.randn(512, 512)\nwhile True: a @ a"],
}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
STEPS = """
import json, statistics, sys, time
if sys.argv[1] == "after":
    from medm2g.core.threads import configure_threads
    configure_threads()
import torch
from medm2g.core.diffusion.conditional import condition_context
from medm2g.registry import ModelSize, load_modalities

ct = load_modalities()["ct"]
torch.manual_seed(0)
unet = ct.unet(ModelSize.CPU, 64)
optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
latents = torch.randn(8, *ct.spec.latent_shape)
context = condition_context(torch.randn(8, 64), torch.ones(8, dtype=torch.bool))
seconds = []
for step in range(int(sys.argv[2])):
    started = time.perf_counter()
    t = torch.randint(0, 1000, (8,))
    loss = torch.nn.functional.mse_loss(unet(latents, t, context), latents)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    seconds.append(time.perf_counter() - started)
steady = seconds[2:]
print(json.dumps({"median": statistics.median(steady), "p90": statistics.quantiles(steady, n=10)[-1],
                  "max": max(steady), "threads": torch.get_num_threads()}))
"""


def measure(busy: int, timeout: float, extra: list[str], kind: str = "python") -> dict:
    neighbours = [subprocess.Popen(BUSY[kind], env=_without_thread_settings()) for _ in range(busy)]
    try:
        time.sleep(1.0)  # the neighbours are running before the demo starts
        load_before = os.getloadavg()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with tempfile.TemporaryDirectory() as scratch:
            command = [sys.executable, "-m", "medm2g.core.apps.cli", "demo", "--quick", "--out",
                       str(Path(scratch) / "demo"), *extra]
            started = time.perf_counter()
            demo = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
            try:
                _, stderr = demo.communicate(timeout=timeout)
                status = demo.returncode
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)  # the demo and any worker it forked
                _, stderr = demo.communicate()
                status = None
            seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_after = os.getloadavg()
    finally:
        for neighbour in neighbours:
            neighbour.kill()
            neighbour.wait()
    return {"busy": busy, "seconds": round(seconds, 1), "timed_out": status is None, "status": status,
            "user_seconds": round(after.ru_utime - before.ru_utime, 1),
            "system_seconds": round(after.ru_stime - before.ru_stime, 1),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
            "error": "" if status in (0, None) else stderr.strip().splitlines()[-1:]}


def _without_thread_settings() -> dict:
    return {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}


def measure_steps(busy: int, label: str, steps: int, timeout: float, kind: str = "python") -> dict:
    """``steps`` training steps in a fresh process, ``before`` (library defaults) or ``after``
    (medm2g's start-up thread settings), beside ``busy`` CPU-bound processes of ``kind``."""
    environment = _without_thread_settings()
    neighbours = [subprocess.Popen(BUSY[kind], env=environment) for _ in range(busy)]
    try:
        time.sleep(1.0)
        load_before = os.getloadavg()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", STEPS, label, str(steps)], capture_output=True, text=True,
                                env=environment, timeout=timeout)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        for neighbour in neighbours:
            neighbour.kill()
            neighbour.wait()
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return {"label": label, "busy": busy, "neighbour": kind, "steps": steps, **json.loads(result.stdout.splitlines()[-1]),
            "seconds": round(seconds, 1), "user_seconds": round(after.ru_utime - before.ru_utime, 1),
            "system_seconds": round(after.ru_stime - before.ru_stime, 1),
            "load_before": round(load_before[0], 2), "cores": len(os.sched_getaffinity(0))}


def steps_main(args) -> None:
    print("| threads | busy neighbours | median s/step | p90 s/step | longest step s | user s | system s | "
          "load avg before |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for busy in args.busy:
        for repeat in range(args.repeats):
            for label in (("before", "after") if repeat % 2 == 0 else ("after", "before")):
                row = measure_steps(busy, label, args.steps, args.timeout, args.neighbour)
                rows.append(row)
                print(f"| {label} ({row['threads']}) | {busy} {args.neighbour} | {row['median']:.3f} | {row['p90']:.3f} | "
                      f"{row['max']:.2f} | {row['user_seconds']:.1f} | {row['system_seconds']:.1f} | "
                      f"{row['load_before']:.2f} |", flush=True)
    out = args.out.with_name("busy_neighbours_steps.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.is_file() else []
    out.write_text(json.dumps(previous + rows, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a demo is killed (default 900)")
    parser.add_argument("--label", default="", help="what is measured (before, after, ...), kept in the JSON")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "busy_neighbours.json")
    parser.add_argument("--neighbour", choices=sorted(BUSY), default="python",
                        help="what each busy process runs: a Python loop, or a PyTorch matrix product (default python)")
    parser.add_argument("--steps", type=int, help="measure this many training steps instead of the demo")
    parser.add_argument("--repeats", type=int, default=2, help="with --steps: before/after pairs per row")
    parser.add_argument("extra", nargs="*", help="more demo options, after --")
    args = parser.parse_args()
    if args.steps:
        steps_main(args)
        return
    environment = {k: os.environ[k] for k in ("PYTHONPATH", "OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ}
    print("| label | busy neighbours | wall s | user s | system s | load avg before -> after |")
    print("|---|---|---|---|---|---|")
    rows = []
    for busy in args.busy:
        row = {"label": args.label, "cores": len(os.sched_getaffinity(0)), "environment": environment,
               **measure(busy, args.timeout, args.extra, args.neighbour), "neighbour": args.neighbour}
        rows.append(row)
        wall = f">{args.timeout:.0f} (killed)" if row["timed_out"] else f"{row['seconds']:.1f}"
        print(f"| {args.label} | {busy} {args.neighbour} | {wall} | {row['user_seconds']:.1f} | {row['system_seconds']:.1f} | "
              f"{row['load_before'][0]:.2f} -> {row['load_after'][0]:.2f} |", flush=True)
        if row["error"]:
            print(f"  demo failed: {row['error']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else []
    args.out.write_text(json.dumps(previous + rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
