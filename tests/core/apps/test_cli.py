"""The command line: outputs people and machines read, and one-line errors with exit status 1."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medm2g.core.apps.cli import main
from medm2g.core.graph.shipped import resolve_graph_path

GRAPHS = Path(__file__).parents[3] / "graphs"


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_plan_prints_the_papers_star_and_rounds(capsys):
    status, out, _ = run(capsys, "plan", str(GRAPHS / "medm2g.yaml"))
    assert status == 0
    assert "centre: text (given in the graph)" in out
    assert "mri      aligns to ct       through ct (2 hops)" in out
    rounds = [line.strip() for line in out.splitlines() if line.strip().startswith("Round ")]
    assert [r.split(":")[0] for r in rounds] == ["Round 1 (#12) text-xray", "Round 2 (#13) text-ct", "Round 3 (#14) ct-mri"]
    assert "alignment edges 3 vs 6; cross-guided rounds 3 vs 6" in out
    assert "text -> mri  through text-ct-mri" in out


def test_plan_json_is_machine_readable(capsys):
    status, out, _ = run(capsys, "plan", str(GRAPHS / "medm2g.yaml"), "--json")
    plan = json.loads(out)
    assert status == 0 and plan["center"] == "text"
    rounds = [s for s in plan["stages"] if s["kind"] == "cross_guided"]
    assert [s["modalities"] for s in rounds] == [["text", "xray"], ["text", "ct"], ["ct", "mri"]]
    assert "ct.context_encoder" in rounds[1]["trains"] and "text.cross_guidance" in rounds[1]["frozen"]
    assert plan["cost"]["alignment_edges"] == 3


def test_plan_draw_writes_a_picture(tmp_path, capsys):
    picture = tmp_path / "plan.png"
    status, _, _ = run(capsys, "plan", str(GRAPHS / "medm2g.yaml"), "--draw", str(picture))
    assert status == 0
    pixels = np.asarray(Image.open(picture).convert("RGB"))
    assert pixels.shape[0] >= 500 and pixels.shape[1] >= 1000
    train_green = np.all(np.abs(pixels.astype(int) - [0x2E, 0x9D, 0x5B]) < 8, axis=-1)
    assert train_green.mean() > 0.01  # the trained cells are drawn


def test_bundled_graph_found_by_name_when_no_such_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_graph_path("medm2g.yaml").read_text() == (GRAPHS / "medm2g.yaml").read_text()
    assert resolve_graph_path("medm2g").name == "medm2g.yaml"


def test_modalities_lists_each_with_its_provider(capsys):
    status, out, _ = run(capsys, "modalities")
    assert status == 0
    assert "ct  (volume)  provided by 'ct' from medm2g" in out
    assert "intensity -1000..1000 (HU) -> [-1, 1]" in out
    status, out, _ = run(capsys, "modalities", "--json")
    records = {r["name"]: r for r in json.loads(out)}
    assert records["text"]["spec"]["latent_shape"] == [768, 1, 1]


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"modalities": ["text", "pett"], "pairs": [{"a": "text", "b": "pett", "dataset": "x"}]},
         "unknown modality 'pett'"),
        ({"modalities": ["text", "ct", "mri"], "pairs": [{"a": "text", "b": "ct", "dataset": "x"}]},
         "modality mri has no path of paired data to the centre"),
        ("modalities: [text\n", "malformed YAML"),
    ],
)
def test_bad_graphs_give_one_line_and_exit_status_1(tmp_path, capsys, graph, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(graph if isinstance(graph, str) else yaml.safe_dump(graph))
    status, out, err = run(capsys, "plan", str(path))
    assert status == 1 and out == ""
    assert err.startswith(f"medm2g: error: {path}: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_graph_lists_the_shipped_ones(capsys):
    status, _, err = run(capsys, "plan", "no-such-graph.yaml")
    assert status == 1 and "no such pair graph file (graphs shipped with medm2g: medm2g.yaml" in err


def test_console_script_is_installed():
    result = subprocess.run([Path(sys.executable).parent / "medm2g", "plan", "medm2g.yaml", "--json"],
                            capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["center"] == "text"
