"""VAE stages: each modality's VAE trains with its own loss, gets a data-calibrated latent scale,
and reloads both in medm2g and in plain diffusers."""

import attrs
import pytest
import torch
from diffusers import AutoencoderKL

from medm2g.core.config.run_config import RunConfig, VAEStageConfig
from medm2g.core.graph.engine import StageKind
from medm2g.core.graph.pair_graph import load_pair_graph
from medm2g.core.io.checkpoints import read_json
from medm2g.core.training.autoencoding import load_vae, run_vae_stage
from medm2g.core.training.batches import make_batch
from medm2g.core.training.data import paired_records
from medm2g.core.training.engine import Engine
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import Run, prepare_run


@pytest.fixture(scope="module")
def trained_vaes(blob_cohort, installed, tmp_path_factory):
    run = tmp_path_factory.mktemp("vae-run")
    config = RunConfig(size="tiny", embed_dim=32, seed=2, device="cpu",
                       vae=VAEStageConfig(steps=40, batch_size=8, learning_rate=3e-3, checkpoint_every=20))
    plan = prepare_run(load_pair_graph(blob_cohort / "blobs.yaml", installed=installed), installed, config, run)
    stages = {stage.modalities[0]: stage for stage in plan.stages_of(StageKind.VAE)}
    longer = attrs.evolve(config, vae=attrs.evolve(config.vae, text_steps=800, batch_size=8, checkpoint_every=400))  # GPT-2 needs more
    records = {m: run_vae_stage(Run(config if m == "xray" else longer, installed, plan, RunLayout(run), Engine(config.acceleration, torch.device("cpu"))), stages[m])
               for m in ("xray", "text")}
    return plan, config, RunLayout(run), records


def test_the_reconstruction_loss_falls(trained_vaes):
    _, _, layout, records = trained_vaes
    for modality, key in (("xray", "l1"), ("text", "token_ce")):
        rows = read_json(layout.stage_record(next(s for s in trained_vaes[0].stages if s.title == f"vae {modality}")))
        assert rows["final"][key] < 0.7 * first_logged(layout, trained_vaes[0], modality, key), modality


def first_logged(layout, plan, modality, key):
    stage = next(s for s in plan.stages if s.title == f"vae {modality}")
    first_line = layout.stage_history(stage).read_text().splitlines()[0]
    import json

    return json.loads(first_line)[key]


def test_the_latent_scale_gives_unit_variance_latents(trained_vaes, blob_cohort, installed):
    plan, config, layout, records = trained_vaes
    for modality in ("xray", "text"):
        vae = load_vae(installed, modality, config, layout)
        assert vae.scaling_factor == pytest.approx(records[modality]["scaling_factor"])
        stage = next(s for s in plan.stages if s.title == f"vae {modality}")
        data = paired_records(plan.graph, stage.datasets, (modality,), installed, split="train")
        batch = make_batch(data, range(len(data)))
        with torch.no_grad():
            latents = vae.encode(batch[modality], generator=torch.Generator().manual_seed(0))
        assert float(latents.std()) == pytest.approx(1.0, rel=0.1), modality


def test_an_imaging_vae_reloads_in_plain_diffusers(trained_vaes, installed):
    _, config, layout, records = trained_vaes
    plain = AutoencoderKL.from_pretrained(layout.exported("xray", "vae"))
    assert plain.config.scaling_factor == pytest.approx(records["xray"]["scaling_factor"])
    ours = load_vae(installed, "xray", config, layout)
    images = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = ours.autoencoder.encode(images).latent_dist.mean
        assert torch.allclose(plain.encode(images).latent_dist.mean, expected, atol=1e-6)


def test_text_latents_carry_the_report_and_decode_back(trained_vaes, installed):
    _, config, layout, records = trained_vaes
    vae = load_vae(installed, "text", config, layout)
    reports = [f"Findings: a lesion is seen in the {side} frontal lobe. Impression: {side} lesion."
               for side in ("left", "right")]
    with torch.no_grad():
        latents = vae.encode(reports, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (2, 768, 1, 1)
    # the blob reports differ in 3 of 19 tokens (log 8 nats): a decoder ignoring the latent
    # cannot go below about 0.11 nats per token
    assert records["text"]["final"]["token_ce"] < 0.08
    decoded = vae.decode(latents)
    assert decoded[0] != decoded[1]
    assert [text.split()[8] for text in decoded] == ["left", "right"], decoded
