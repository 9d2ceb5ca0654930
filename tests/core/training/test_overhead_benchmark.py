"""benchmarks/overhead.py compares like with like: its hand-written round step and medm2g's train
on the same records with the same random draws, so their losses agree step by step (#19, item 9)."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).parents[3] / "benchmarks" / "overhead.py"


@pytest.fixture(scope="module")
def overhead():
    spec = importlib.util.spec_from_file_location("overhead_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("cached", [False, True], ids=["encoding every step", "latents precomputed"])
def test_the_hand_loop_and_medm2g_have_the_same_losses(overhead, tiny_trained_run, cached):
    setting = overhead.load_setting(tiny_trained_run, round_number=1, device="cpu")
    result = overhead.alternate(setting, cached=cached, pairs=4, warmup=1)
    assert None not in result["medm2g_losses"] and None not in result["hand_losses"]
    assert result["order"][:8] == ["medm2g 0", "hand 0", "hand 1", "medm2g 1", "medm2g 2", "hand 2", "hand 3", "medm2g 3"]
    assert sorted(result["order"]) == sorted([f"{loop} {k}" for loop in ("medm2g", "hand") for k in range(5)])
    assert len(result["medm2g_seconds"]) == len(result["hand_seconds"]) == 4
    assert all(seconds > 0 for seconds in result["medm2g_seconds"] + result["hand_seconds"])
    for step, (ours, theirs) in enumerate(zip(result["medm2g_losses"], result["hand_losses"])):
        assert abs(ours - theirs) <= 1e-6, f"step {step}: medm2g {ours!r}, by hand {theirs!r}"
    assert len(set(result["hand_losses"])) > 1  # the steps differ: the models train
    summary = overhead.summarise(result)
    assert summary["pair_ratio_range"][0] <= summary["pair_ratio_median"] <= summary["pair_ratio_range"][1]
