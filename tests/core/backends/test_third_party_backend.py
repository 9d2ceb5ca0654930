"""A backend written outside medm2g, as its own small plugin object, plans, trains and generates
with no edit in core: the graph names it, the engine plans its stage, the trainer runs its
runner and ``generate`` and ``eval`` find its generator, all through ``medm2g_backends``."""

import csv

import pytest
import torch

from medm2g.core.config.run_config import RunConfig
from medm2g.core.errors import GraphError
from medm2g.core.generation.backends import GenerationRequest, default_backend, generation_backend
from medm2g.core.generation.conditions import Condition
from medm2g.core.generation.trained_run import TrainedRun
from medm2g.core.io.checkpoints import load_tensors, save_tensors
from medm2g.core.training.data import paired_records
from medm2g.core.training.loop import complete_stage, stage_record
from medm2g.core.training.run import Run, open_run
from medm2g.core.training.trainer import train
from medm2g.registry import BackendSpec, hookimpl, load_modalities


def run_affine_stage(run: Run, stage) -> dict:
    """Fit target ~ scale * source + shift, per direction, on the edge's training pairs."""
    a, b = stage.modalities
    data = paired_records(run.plan.graph, stage.datasets, (a, b), run.registry, split="train")
    images = {m: torch.stack([record[m] for record in data]) for m in (a, b)}
    weights = {}
    for source, target in ((a, b), (b, a)):
        parameters = torch.zeros(2, requires_grad=True)
        optimizer = torch.optim.Adam([parameters], lr=0.05)
        for _ in range(60):
            optimizer.zero_grad()
            loss = ((parameters[0] + 1) * images[source] + parameters[1] - images[target]).abs().mean()
            loss.backward()
            optimizer.step()
        weights[f"{source}_to_{target}"] = parameters.detach().clone()
    if run.engine.is_main:
        save_tensors(run.layout.translation(a, b, backend="affine"), weights, {"stage": stage.title})
    return complete_stage(run.layout, stage, stage_record(stage, len(data), 60, 0.0, [], run.config), run.engine)


class AffineTranslator:
    def __init__(self, run: TrainedRun):
        self.run = run

    def describe(self, request):
        return {"translation": "affine"}

    def generate(self, request):
        from medm2g.core.generation.backends import GeneratedSample

        (condition,) = {c.modality for c in request.conditions}
        (target,) = request.outputs
        a, b = next((e.a, e.b) for _, e in self.run.plan.translation_stages() if {e.a, e.b} == {condition, target})
        scale, shift = load_tensors(self.run.layout.translation(a, b, backend="affine"))[f"{condition}_to_{target}"]
        return [GeneratedSample(c, k, request.row_seed(i),
                                {target: (scale + 1) * request.conditions[c].sample + shift})
                for i, (c, k) in enumerate(request.rows())]


class AffinePlugin:
    """What a third-party package would register under the ``medm2g`` entry-point group."""

    @hookimpl
    def medm2g_backends(self):
        return [BackendSpec(name="affine", description="a per-direction intensity map (a test's backend)",
                            stage_runners={"affine_fit": run_affine_stage}, generator=AffineTranslator,
                            edge_stage_kind="affine_fit")]


@pytest.fixture(scope="module")
def affine_cohort(tmp_path_factory, installed):
    """X-ray and CT of the same 12 subjects, CT darker by a known map of the X-ray."""
    root = tmp_path_factory.mktemp("affine")
    generator = torch.Generator().manual_seed(0)
    rows = []
    for index in range(12):
        subject = f"A{index:02d}"
        xray = torch.rand((1, 64, 64), generator=generator) * 1.6 - 0.8
        ct = 0.5 * xray - 0.2
        installed["xray"].write(xray, root / subject / "xray.png")
        installed["ct"].write(torch.stack([ct]), root / subject / "ct.nii.gz")
        rows.append({"subject_id": subject, "split": "train" if index < 9 else "test",
                     "xray": f"{subject}/xray.png", "ct": f"{subject}/ct.nii.gz"})
    with (root / "pairs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / "graph.yaml").write_text("modalities: [xray, ct]\n"
                                     "pairs:\n  - {a: xray, b: ct, dataset: pairs.csv, backend: affine}\n")
    return root


def test_a_third_party_backend_plans_trains_and_generates(affine_cohort, tmp_path):
    registry = load_modalities([AffinePlugin()])
    assert "affine" in registry.backends
    run = open_run(affine_cohort / "graph.yaml", tmp_path / "run", RunConfig(size="tiny", device="cpu"),
                   registry=registry)
    (stage,) = run.plan.stages
    assert stage.kind.value == "affine_fit" and stage.modalities == ("xray", "ct")
    assert [str(group) for group in stage.trains] == ["xray-ct.translation"]

    (result,) = train(run)
    assert result.record["stage"]["kind"] == "affine_fit" and not result.skipped

    trained = TrainedRun.open(tmp_path / "run", registry, device="cpu")
    assert trained.translatable() == [("xray", "ct"), ("ct", "xray")]
    xray = registry["xray"].read(affine_cohort / "A10" / "xray.png")
    request = GenerationRequest(outputs=("ct",), conditions=(Condition("xray", xray, "xray A10"),))
    assert default_backend(trained, request) == "affine"
    (sample,) = generation_backend("affine", trained).generate(request)
    truth = 0.5 * xray - 0.2
    assert float((sample.outputs["ct"] - truth).abs().mean()) < 0.05


def test_an_edge_naming_a_backend_nobody_installed_is_refused_with_the_installed_ones(affine_cohort, installed):
    from medm2g.core.graph.pair_graph import load_pair_graph

    with pytest.raises(GraphError, match=r"pairs\[0\].backend: unknown backend 'affine' \(known: medm2g, syndiff, vq-ar\)"):
        load_pair_graph(affine_cohort / "graph.yaml", installed=installed)
