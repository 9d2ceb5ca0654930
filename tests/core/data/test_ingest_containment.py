"""Manifests may name files outside their folder: ingest says so, and --contain refuses it (#19, item 7)."""

import csv
import logging

import pytest
import torch

from medm2g.core.apps.cli import main
from medm2g.core.data.ingest import ingest
from medm2g.core.errors import DataError


@pytest.fixture()
def images(tmp_path, installed):
    """Two X-rays in ``tmp_path/store/xray``."""
    folder = tmp_path / "store" / "xray"
    for name in ("a.png", "b.png"):
        installed["xray"].write(torch.zeros(1, 64, 64), folder / name)
    return folder


def manifest_paths(path):
    with path.open() as handle:
        return [row["xray"] for row in csv.DictReader(handle)]


def test_records_outside_the_manifest_folder_are_kept_and_reported(tmp_path, images, installed, caplog):
    out = tmp_path / "manifests" / "xray.csv"
    with caplog.at_level(logging.WARNING):
        report = ingest(images, installed["xray"], out)
    assert report.records == 2 and report.outside == 2
    assert manifest_paths(out) == ["../store/xray/a.png", "../store/xray/b.png"]
    assert "2 of 2 records name files outside the manifest's folder" in caplog.text
    assert "--contain" in caplog.text


def test_records_inside_are_not_reported(tmp_path, images, installed, caplog):
    with caplog.at_level(logging.WARNING):
        report = ingest(images, installed["xray"], tmp_path / "store" / "xray.csv", contain=True)
    assert report.records == 2 and report.outside == 0
    assert manifest_paths(report.manifest) == ["xray/a.png", "xray/b.png"]
    assert "outside" not in caplog.text


def test_contain_refuses_a_folder_outside_the_manifests(tmp_path, images, installed):
    with pytest.raises(DataError, match=r"xray: outside the manifest's folder .*manifests, and --contain refuses"):
        ingest(images, installed["xray"], tmp_path / "manifests" / "xray.csv", contain=True)
    assert not (tmp_path / "manifests" / "xray.csv").exists()


def test_contain_skips_a_symbolic_link_that_leads_out(tmp_path, images, installed):
    secret = tmp_path / "elsewhere" / "secret.png"
    installed["xray"].write(torch.zeros(1, 64, 64), secret)
    (images / "link.png").symlink_to(secret)
    report = ingest(images, installed["xray"], tmp_path / "store" / "xray.csv", contain=True)
    assert report.records == 2 and "xray/link.png" not in manifest_paths(report.manifest)
    assert dict(report.skipped)[str(images / "link.png")].startswith("leads out of the manifest's folder")
    uncontained = ingest(images, installed["xray"], tmp_path / "store" / "all.csv")
    assert uncontained.records == 3 and uncontained.outside == 1


def test_the_cli_takes_contain(tmp_path, images, capsys):
    status = main(["ingest", str(images), "--modality", "xray", "--out", str(tmp_path / "m" / "x.csv"), "--contain"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "--contain refuses" in err
    assert main(["ingest", str(images), "--modality", "xray", "--out", str(tmp_path / "m" / "x.csv")]) == 0
