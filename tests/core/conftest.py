"""A small generated paired set on which alignment is learnable in seconds with tiny models.

Each subject has one of eight findings: a bright blob on the left or right, in one of
four regions. The report names it; the X-ray and the CT key slice show it at that
place (with jitter and noise). Pairs: text-xray and text-ct; X-ray and CT are never
paired, so their retrieval tests alignment through the centre.
"""

from __future__ import annotations

import csv

import pytest
import torch

SIDES = ("left", "right")
REGIONS = ("frontal", "parietal", "temporal", "occipital")
GRAPH = """\
name: blobs
center: text
modalities: [text, xray, ct]
evaluation: data/test.csv
pairs:
  - {a: text, b: xray, dataset: data/text-xray.csv}
  - {a: text, b: ct, dataset: data/text-ct.csv}
"""


def blob_image(finding: int, generator: torch.Generator, size: int = 64) -> torch.Tensor:
    side, region = divmod(finding, len(REGIONS))
    centre_x = size * (0.3 if side == 0 else 0.7) + float(torch.randn(1, generator=generator)) * 2
    centre_y = size * (0.2 + 0.2 * region) + float(torch.randn(1, generator=generator)) * 2
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    blob = torch.exp(-((x - centre_x) ** 2 + (y - centre_y) ** 2) / (2 * 4.0**2))
    return (blob * 1.6 - 0.8 + 0.05 * torch.randn(size, size, generator=generator)).clamp(-1, 1)[None]


def report(finding: int) -> str:
    side, region = divmod(finding, len(REGIONS))
    return f"Findings: a lesion is seen in the {SIDES[side]} {REGIONS[region]} lobe. Impression: {SIDES[side]} lesion."


def write_blob_cohort(root, registry, per_pair: int = 48, test: int = 16, seed: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    (root / "data").mkdir(parents=True)
    (root / "blobs.yaml").write_text(GRAPH)
    columns = ["subject_id", "split", "slice", "text", "xray", "ct"]
    groups = {"text-xray": per_pair, "text-ct": per_pair, "test": test}
    number = 0
    for group, count in groups.items():
        rows = []
        for index in range(count):
            subject = f"B{number:04d}"
            number += 1
            finding = index % 8
            folder = root / "subjects" / subject
            row = {"subject_id": subject, "split": "test" if group == "test" else ("val" if index < 8 else "train"),
                   "slice": 1, "text": report(finding)}
            if group in ("text-xray", "test"):
                registry["xray"].write(blob_image(finding, generator), folder / "xray.png")
                row["xray"] = f"../subjects/{subject}/xray.png"
            if group in ("text-ct", "test"):
                volume = torch.stack([torch.full((1, 64, 64), -0.8), blob_image(finding, generator),
                                      torch.full((1, 64, 64), -0.8)])
                registry["ct"].write(volume, folder / "ct.nii.gz")
                row["ct"] = f"../subjects/{subject}/ct.nii.gz"
            rows.append(row)
        with (root / "data" / f"{group}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


@pytest.fixture(scope="session")
def blob_cohort(tmp_path_factory, installed):
    """The folder holding blobs.yaml and its manifests."""
    root = tmp_path_factory.mktemp("blobs")
    write_blob_cohort(root, installed)
    return root


TINY_RUN_CONFIG = """\
size: tiny
embed_dim: 32
alignment: {steps: 3, batch_size: 8}
vae: {steps: 3, text_steps: 3, batch_size: 8}
ldm: {steps: 3, text_steps: 3, batch_size: 8}
cross_guidance: {width: 32, heads: 2, steps: 3, batch_size: 8}
diffusion: {sampling_steps: 4}
syndiff: {widths: [16, 32], latent_dim: 16, training_steps: 3, batch_size: 4, checkpoint_every: 3}
vq_ar: {widths: [16, 16, 16], codebook_size: 32, code_dim: 8, codebook_steps: 3, discriminator_start: 1,
        dead_code_restart_every: 2, alignment_dim: 32, alignment_steps: 3, transformer_width: 32,
        transformer_layers: 1, transformer_heads: 2, transformer_steps: 3, batch_size: 4, checkpoint_every: 3}
"""
"""A run config that trains every stage in seconds: for tests of the machinery, not of quality."""


@pytest.fixture(scope="session")
def tiny_run_config() -> str:
    return TINY_RUN_CONFIG


@pytest.fixture(scope="session")
def tiny_trained_run(blob_cohort, tmp_path_factory):
    """A run folder in which every stage of the blob plan has run (3 steps each, tiny models)."""
    from medm2g.core.apps.cli import main

    folder = tmp_path_factory.mktemp("tiny-run")
    config = folder / "tiny.yaml"
    config.write_text(TINY_RUN_CONFIG)
    run = folder / "run"
    assert main(["train", str(blob_cohort / "blobs.yaml"), "--out", str(run), "--config", str(config),
                 "--device", "cpu"]) == 0
    return run


@pytest.fixture()
def stop_training(monkeypatch):
    """``stop_training(title, step)``: training raises KeyboardInterrupt as stage ``title`` (``"ldm ct"``)
    starts step ``step``, as if the run were stopped there; ``stop_training(None)`` lifts it."""
    from medm2g.core.training import loop

    real = loop.step_seed

    def arm(title, step=0):
        def stopping(seed, stage, k):
            if stage.title == title and k == step:
                raise KeyboardInterrupt(f"stopped by the test at {title} step {step}")
            return real(seed, stage, k)

        monkeypatch.setattr(loop, "step_seed", real if title is None else stopping)

    return arm
