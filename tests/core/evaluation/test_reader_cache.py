"""Finding readers are fitted once per process for the same training manifests."""

import os

from medm2g.core.evaluation.generation_eval import finding_readers
from medm2g.core.graph.engine import build_plan
from medm2g.core.graph.pair_graph import load_pair_graph
from medm2g.core.training.data import manifest_path


def test_a_reader_is_reused_until_its_training_manifests_change(phantom_cohort, installed):
    out, _ = phantom_cohort
    graph = load_pair_graph(out / "medm2g.yaml", installed=installed)
    plan = build_plan(graph, imaging={m for m in graph.modalities if installed[m].spec.kind.is_imaging})
    first = finding_readers(plan, installed, ["ct", "text"])
    assert set(first) == {"ct"}  # text is no image: no reader
    assert finding_readers(plan, installed, ["ct"])["ct"] is first["ct"]
    manifest = manifest_path(graph, graph.pairs[0].dataset[0])
    stamp = manifest.stat().st_mtime_ns + 10**9
    os.utime(manifest, ns=(stamp, stamp))  # an edited manifest is other data
    assert finding_readers(plan, installed, ["ct"])["ct"] is not first["ct"]
