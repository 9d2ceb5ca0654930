"""`medm2g align` end to end on the blob set: outputs, resume, and one-line errors."""

import json

from medm2g.core.apps.cli import main


def test_align_writes_encoders_records_and_the_retrieval_table_then_resumes(blob_cohort, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("size: tiny\nembed_dim: 32\nalignment: {steps: 3, batch_size: 8, checkpoint_every: 3}\n")
    run = tmp_path / "run"
    assert main(["align", str(blob_cohort / "blobs.yaml"), "--out", str(run), "--config", str(config),
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "stage 1 alignment text-xray" in out and "stage 2 alignment text-ct" in out
    assert "| xray -> ct | no | xray - text - ct | 16 |" in out
    assert sorted(p.name for p in (run / "encoders").iterdir()) == ["ct.safetensors", "text.safetensors", "xray.safetensors"]
    table = json.loads((run / "eval" / "retrieval.json").read_text())
    assert len(table) == 6 and {row["query"] for row in table} == {"text", "xray", "ct"}
    assert (run / "plan.png").stat().st_size > 1000 and (run / "eval" / "retrieval.png").stat().st_size > 1000
    assert json.loads((run / "plan.json").read_text())["center"] == "text"

    assert main(["align", str(blob_cohort / "blobs.yaml"), "--out", str(run), "--config", str(config),
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count("already complete") == 2


def test_align_with_a_changed_setting_on_an_old_run_is_one_line_error(blob_cohort, tmp_path, capsys):
    run = tmp_path / "run"
    (run).mkdir()
    (run / "config.yaml").write_text("size: tiny\nalignment: {steps: 5}\n")
    code = main(["align", str(blob_cohort / "blobs.yaml"), "--out", str(run), "--size", "tiny", "--alignment-steps", "2"])
    error = capsys.readouterr().err.strip()
    assert code == 1 and error.count("\n") == 0
    assert "this run was started with another config (alignment.steps: 5 -> 2)" in error


def test_align_on_a_graph_whose_manifests_are_missing_says_how_to_get_data(tmp_path, capsys):
    graph = tmp_path / "g.yaml"
    graph.write_text("modalities: [text, xray]\npairs:\n  - {a: text, b: xray, dataset: nowhere.csv}\n")
    assert main(["align", str(graph), "--out", str(tmp_path / "run"), "--size", "tiny"]) == 1
    error = capsys.readouterr().err
    assert "nowhere.csv: manifest named by" in error and "medm2g data phantom --out DIR" in error
