"""Pair graph files: every mistake names the file, the place in it and what was expected."""

import json
from pathlib import Path

import attrs
import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from medm2g.core.errors import GraphError
from medm2g.core.graph.pair_graph import PairEdge, PairGraph, load_pair_graph, structure_pair_graph

GRAPHS = Path(__file__).parents[3] / "graphs"
INSTALLED = ["ct", "mri", "pet", "text", "xray"]


def write_graph(tmp_path, data) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def graph(*pairs, modalities=("text", "ct", "mri"), **top):
    return {"modalities": list(modalities), "pairs": [dict(a=a, b=b, dataset=f"{a}-{b}.csv") for a, b in pairs], **top}


def load_error(tmp_path, data) -> str:
    with pytest.raises(GraphError) as error:
        load_pair_graph(write_graph(tmp_path, data), installed=INSTALLED)
    return str(error.value)


def test_the_paper_graph_loads():
    loaded = load_pair_graph(GRAPHS / "medm2g.yaml", installed=INSTALLED)
    assert loaded.modalities == ("text", "xray", "ct", "mri")
    assert [(e.a, e.b) for e in loaded.pairs] == [("text", "xray"), ("text", "ct"), ("ct", "mri")]
    assert loaded.center == "text"
    assert loaded.base_dir() == GRAPHS


def test_unknown_modality_names_file_path_suggestion_and_installed(tmp_path):
    message = load_error(tmp_path, graph(("text", "ct"), ("ct", "pett"), modalities=("text", "ct", "pett")))
    assert message.startswith(str(tmp_path / "g.yaml") + ": ")
    assert "modalities[2]: unknown modality 'pett' (did you mean 'pet'? installed: ct, mri, pet, text, xray)" in message
    assert "pairs[1].b: unknown modality 'pett'" in message


def test_pair_naming_a_modality_the_graph_does_not_list(tmp_path):
    message = load_error(tmp_path, graph(("text", "ct"), ("ct", "xray")))
    assert "pairs[1].b: 'xray' is not listed in modalities (text, ct, mri)" in message


def test_duplicate_pair_in_either_order(tmp_path):
    message = load_error(tmp_path, graph(("text", "ct"), ("ct", "mri"), ("ct", "text")))
    assert "pairs[2]: duplicate of pairs[0] (ct-text, backend medm2g)" in message


def test_a_pair_may_be_listed_once_per_backend_but_not_twice_for_one(tmp_path, installed):
    path = tmp_path / "g.yaml"
    path.write_text("modalities: [ct, mri]\npairs:\n"
                    "  - {a: ct, b: mri, dataset: p.csv}\n"
                    "  - {a: mri, b: ct, dataset: u.csv, paired: false, backend: syndiff}\n")
    graph = load_pair_graph(path, installed=installed)
    assert [edge.backend for edge in graph.pairs] == ["medm2g", "syndiff"]
    path.write_text(path.read_text() + "  - {a: ct, b: mri, dataset: v.csv, backend: syndiff}\n")
    with pytest.raises(GraphError, match=r"pairs\[2\]: duplicate of pairs\[1\] \(ct-mri, backend syndiff\)"):
        load_pair_graph(path, installed=installed)


def test_an_unknown_backend_is_named_with_its_place_and_a_suggestion(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("modalities: [ct, mri]\npairs:\n  - {a: mri, b: ct, dataset: u.csv, backend: syndif}\n")
    with pytest.raises(GraphError, match=r"g.yaml: pairs\[0\].backend: unknown backend 'syndif' "
                                         r"\(did you mean 'syndiff'\? known: medm2g, syndiff, vq-ar\)"):
        load_pair_graph(path)


def test_self_pair(tmp_path):
    assert "pairs[1]: a self-pair (ct-ct)" in load_error(tmp_path, graph(("text", "ct"), ("ct", "ct")))


def test_centre_must_be_a_listed_modality(tmp_path):
    message = load_error(tmp_path, graph(("text", "ct"), center="xray"))
    assert "center: 'xray' is not one of the graph's modalities" in message


def test_malformed_yaml_gives_line_and_column(tmp_path):
    message = load_error(tmp_path, "modalities: [text, ct\npairs: []\n")
    assert "malformed YAML: line 2, column" in message


def test_unknown_and_missing_keys_name_their_path(tmp_path):
    data = graph(("text", "ct"))
    data["pairs"][0]["datset"] = data["pairs"][0].pop("dataset")
    data["centre"] = "text"
    message = load_error(tmp_path, data)
    assert "(top level): unknown key(s) centre" in message
    assert "pairs[0]: unknown key(s) datset" in message
    assert "pairs[0].dataset: required field missing" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"modalities": "text"}, "modalities: expected a list of names, got 'text'"),
        ({"pairs": {"a": "text"}}, "pairs: expected a list of pairs, got dict"),
        ({"pairs": ["text-ct"]}, "pairs[0]: expected a mapping with keys a, b, dataset, got str 'text-ct'"),
        ({"freeze_center": "yes"}, "freeze_center: expected true or false, got 'yes'"),
        ({"pairs": [{"a": "text", "b": 3, "dataset": "x"}]}, "pairs[0].b: expected a string, got int 3"),
        ({"pairs": [{"a": "text", "b": "ct", "dataset": []}]}, "pairs[0].dataset: expected a dataset reference"),
    ],
)
def test_wrong_types_are_explained(tmp_path, change, expected):
    data = graph(("text", "ct"))
    data.update(change)
    assert expected in load_error(tmp_path, data)


def test_a_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(GraphError, match="nothing.yaml: cannot read pair graph"):
        load_pair_graph(tmp_path / "nothing.yaml")


def test_dataset_may_be_one_reference_or_several():
    loaded = structure_pair_graph(
        {"modalities": ["text", "xray"], "pairs": [{"a": "text", "b": "xray", "dataset": ["mimic.csv", "iu.csv"]}]}
    )
    assert loaded.pairs[0].dataset == ("mimic.csv", "iu.csv")


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8))
def test_arbitrary_yaml_values_give_a_graph_error_or_a_graph(data):
    """No input, however malformed, escapes as anything but a GraphError."""
    try:
        result = structure_pair_graph(data, "fuzz.yaml")
    except GraphError as error:
        assert str(error).startswith("fuzz.yaml: ")
    else:
        assert isinstance(result, PairGraph)


def test_the_json_schema_accepts_shipped_graphs_and_rejects_mistakes():
    schema = json.loads((GRAPHS / "pair-graph.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in GRAPHS.glob("*.yaml"):
        assert not list(validator.iter_errors(yaml.safe_load(path.read_text()))), path
    assert list(validator.iter_errors(graph(("text", "ct"), centre="text")))
    assert list(validator.iter_errors({"modalities": ["text"], "pairs": [{"a": "text", "b": "ct"}]}))


def test_the_json_schema_names_exactly_the_format_fields():
    """The schema is written by hand for editors; this keeps it in step with the classes."""
    schema = json.loads((GRAPHS / "pair-graph.schema.json").read_text())
    graph_fields = {f.name for f in attrs.fields(PairGraph)} - {"source"}
    assert set(schema["properties"]) == graph_fields
    assert set(schema["$defs"]["pair"]["properties"]) == {f.name for f in attrs.fields(PairEdge)}


def test_a_graph_states_its_data_s_intensity_windows_and_bad_ones_are_named(tmp_path):
    assert load_pair_graph(GRAPHS / "medm2g.yaml", installed=INSTALLED).intensity_windows == {"ct": (-100.0, 200.0)}
    assert load_pair_graph(write_graph(tmp_path, graph(("text", "ct"))), installed=INSTALLED).intensity_windows == {}
    message = load_error(tmp_path, graph(("text", "ct"), intensity_windows={"ct": [200, -100]}))
    assert "intensity_windows" in message and "expected finite low < high" in message
    message = load_error(tmp_path, graph(("text", "ct"), intensity_windows={"ct": [0, ".inf"]}))
    assert "expected [low, high] numbers" in message
    message = load_error(tmp_path, graph(("text", "ct"), intensity_windows={"xray": [0, 1]}))
    assert "intensity_windows.xray: not one of the graph's modalities (text, ct, mri)" in message


def test_single_modality_data_feed_that_modalitys_vae_and_ldm_and_are_checked(tmp_path):
    from medm2g.core.graph.engine import StageKind, build_plan

    data = graph(("text", "ct"), ("ct", "mri"), single_modality=[{"modality": "mri", "dataset": "ixi.csv"}])
    loaded = load_pair_graph(write_graph(tmp_path, data), installed=INSTALLED)
    plan = build_plan(loaded, imaging={"ct", "mri"})
    vae = next(s for s in plan.stages_of(StageKind.VAE) if s.modalities == ("mri",))
    ldm = next(s for s in plan.stages_of(StageKind.LDM) if s.modalities == ("mri",))
    assert vae.datasets == ldm.datasets == ("ct-mri.csv", "ixi.csv")
    assert all("ixi.csv" not in s.datasets for s in plan.stages_of(StageKind.ALIGNMENT))  # pairs only
    message = load_error(tmp_path, graph(("text", "ct"), single_modality=[{"modality": "pet", "dataset": "p.csv"}]))
    assert "single_modality[0].modality: 'pet' is not listed in modalities (text, ct, mri)" in message
    message = load_error(tmp_path, graph(("text", "ct"), single_modality=[{"modality": "mri", "data": "p.csv"}]))
    assert "single_modality" in message and "data" in message
    schema = json.loads((GRAPHS / "pair-graph.schema.json").read_text())
    jsonschema.validate(data, schema)
    alone = {"modalities": ["mri"], "pairs": [], "single_modality": [{"modality": "mri", "dataset": "ixi.csv"}]}
    plan = build_plan(load_pair_graph(write_graph(tmp_path, alone), installed=INSTALLED), imaging={"mri"})
    assert [(s.kind, s.modalities) for s in plan.stages] == [
        (StageKind.ALIGNMENT, ("mri",)), (StageKind.VAE, ("mri",)), (StageKind.LDM, ("mri",))]
