"""Single-modality LDM stages and the first multi-flow round: what trains, what stays frozen, sampling."""

import json

import pytest
import torch
from diffusers import UNet2DConditionModel

from medm2g.core.config.run_config import AlignmentConfig, LDMStageConfig, RunConfig, VAEStageConfig
from medm2g.core.diffusion.conditional import conditional_sample
from medm2g.core.diffusion.schedule import DiffusionConfig
from medm2g.core.graph.engine import StageKind
from medm2g.core.graph.pair_graph import load_pair_graph
from medm2g.core.training.alignment import align
from medm2g.core.training.autoencoding import load_vae, run_vae_stage
from medm2g.core.training.encoders import load_prompt_encoders
from medm2g.core.training.engine import Engine
from medm2g.core.training.latent_diffusion import load_denoiser, run_ldm_stage
from medm2g.core.training.layout import RunLayout
from medm2g.core.training.run import Run, prepare_run


@pytest.fixture(scope="module")
def xray_ldm(blob_cohort, installed, tmp_path_factory):
    """Alignment, the X-ray VAE and the X-ray LDM of the blob graph, tiny and short."""
    run = tmp_path_factory.mktemp("ldm-run")
    config = RunConfig(size="tiny", embed_dim=32, seed=4, device="cpu",
                       alignment=AlignmentConfig(steps=20, batch_size=16, learning_rate=1e-3, checkpoint_every=20),
                       vae=VAEStageConfig(steps=30, text_steps=30, batch_size=8, learning_rate=3e-3, checkpoint_every=30),
                       ldm=LDMStageConfig(steps=40, text_steps=40, batch_size=8, learning_rate=1e-3, checkpoint_every=20))
    plan = prepare_run(load_pair_graph(blob_cohort / "blobs.yaml", installed=installed), installed, config, run)
    layout, device = RunLayout(run), Engine(config.acceleration, torch.device("cpu"))
    align(Run.for_plan(plan, installed, config, run))
    vae_stage = next(s for s in plan.stages_of(StageKind.VAE) if s.modalities == ("xray",))
    run_vae_stage(Run(config, installed, plan, layout, device), vae_stage)
    frozen_before = {
        "vae": {k: v.clone() for k, v in load_vae(installed, "xray", config, layout).state_dict().items()},
        "encoder": {k: v.clone() for k, v in load_prompt_encoders(installed, ["xray"], config, layout)["xray"].state_dict().items()},
    }
    ldm_stage = next(s for s in plan.stages_of(StageKind.LDM) if s.modalities == ("xray",))
    record = run_ldm_stage(Run(config, installed, plan, layout, device), ldm_stage)
    return plan, config, layout, ldm_stage, record, frozen_before


def test_the_stage_trains_the_denoiser_against_frozen_vae_and_encoder(xray_ldm, installed):
    plan, config, layout, stage, record, frozen_before = xray_ldm
    assert record["stage"]["trains"] == ["xray.backbone", "xray.condition_attention"]
    assert record["stage"]["frozen"] == ["xray.prompt_encoder", "xray.vae"]
    history = [json.loads(line) for line in layout.stage_history(stage).read_text().splitlines()]
    assert len(history) == 40
    first, last = sum(r["loss"] for r in history[:5]) / 5, sum(r["loss"] for r in history[-5:]) / 5
    assert last < first  # eps-prediction MSE falls from its start near 1
    assert 0 < sum(r["conditioned_fraction"] for r in history) / 40 < 1  # some steps drop the condition
    vae_after = load_vae(installed, "xray", config, layout).state_dict()
    encoder_after = load_prompt_encoders(installed, ["xray"], config, layout)["xray"].state_dict()
    assert all(torch.equal(v, vae_after[k]) for k, v in frozen_before["vae"].items())
    assert all(torch.equal(v, encoder_after[k]) for k, v in frozen_before["encoder"].items())


def test_the_denoiser_reloads_in_plain_diffusers(xray_ldm, installed):
    _, config, layout, _, _, _ = xray_ldm
    plain = UNet2DConditionModel.from_pretrained(layout.exported("xray", "unet"))
    ours = load_denoiser(installed, "xray", config, layout)
    latents, context = torch.randn(2, 4, 16, 16), torch.randn(2, 1, 32)
    timesteps = torch.tensor([10, 500])
    with torch.no_grad():
        assert torch.allclose(plain(latents, timesteps, encoder_hidden_states=context).sample,
                              ours(latents, timesteps, context), atol=1e-5)


def test_a_report_embedding_conditions_the_xray_denoiser_reproducibly(xray_ldm, installed):
    _, config, layout, _, _, _ = xray_ldm
    denoiser = load_denoiser(installed, "xray", config, layout)
    text_encoder = load_prompt_encoders(installed, ["text"], config, layout)["text"]
    vae = load_vae(installed, "xray", config, layout)
    with torch.no_grad():
        condition = text_encoder(["Findings: a lesion is seen in the left frontal lobe. Impression: left lesion."])
    settings = DiffusionConfig(sampling_steps=5)
    first = conditional_sample(denoiser, condition, (4, 16, 16), settings, torch.Generator().manual_seed(1))
    again = conditional_sample(denoiser, condition, (4, 16, 16), settings, torch.Generator().manual_seed(1))
    other = conditional_sample(denoiser, condition, (4, 16, 16), settings, torch.Generator().manual_seed(2))
    assert first.shape == (1, 4, 16, 16) and torch.isfinite(first).all()
    assert torch.equal(first, again) and not torch.equal(first, other)
    with torch.no_grad():
        image = vae.decode(first)
    assert image.shape == (1, 1, 64, 64) and torch.isfinite(image).all()


def test_the_text_ldm_trains_on_768x1x1_latents_and_samples_text(xray_ldm, installed):
    plan, config, layout, _, _, _ = xray_ldm
    device = Engine(config.acceleration, torch.device("cpu"))
    run_vae_stage(Run(config, installed, plan, layout, device), next(s for s in plan.stages_of(StageKind.VAE) if s.modalities == ("text",)))
    stage = next(s for s in plan.stages_of(StageKind.LDM) if s.modalities == ("text",))
    record = run_ldm_stage(Run(config, installed, plan, layout, device), stage)
    assert record["stage"]["trains"] == ["text.backbone", "text.condition_attention"]
    denoiser = load_denoiser(installed, "text", config, layout)
    image_encoder = load_prompt_encoders(installed, ["xray"], config, layout)["xray"]
    with torch.no_grad():
        condition = image_encoder(torch.zeros(2, 1, 64, 64))  # X-ray to report: an image's C_xray conditions text
    latents = conditional_sample(denoiser, condition, (768, 1, 1), DiffusionConfig(sampling_steps=4),
                                 torch.Generator().manual_seed(0))
    assert latents.shape == (2, 768, 1, 1) and torch.isfinite(latents).all()
    reports = load_vae(installed, "text", config, layout).decode(latents, max_length=12)
    assert len(reports) == 2 and all(isinstance(r, str) for r in reports)


@pytest.fixture(scope="module")
def first_round(xray_ldm, installed):
    """Round 1 (text-xray, both sides train) after both LDMs, tiny and short."""
    import attrs

    from medm2g.core.diffusion.cross_guidance import CrossGuidanceConfig
    from medm2g.core.training.cross_guided import run_round_stage

    plan, config, layout, _, _, _ = xray_ldm
    if not layout.denoiser("text").is_file():
        run_vae_stage(Run(config, installed, plan, layout, Engine(config.acceleration, torch.device("cpu"))), next(s for s in plan.stages_of(StageKind.VAE) if s.modalities == ("text",)))
        run_ldm_stage(Run(config, installed, plan, layout, Engine(config.acceleration, torch.device("cpu"))), next(s for s in plan.stages_of(StageKind.LDM) if s.modalities == ("text",)))
    config = attrs.evolve(config, cross_guidance=CrossGuidanceConfig(width=32, heads=2, steps=6, batch_size=8,
                                                                     learning_rate=1e-3, checkpoint_every=3))
    stage = plan.rounds[0]
    return plan, config, layout, stage, run_round_stage(Run(config, installed, plan, layout, Engine(config.acceleration, torch.device("cpu"))), stage)


def test_the_first_round_trains_both_sides_cross_guided_parts(first_round, installed):
    from medm2g.core.io.checkpoints import load_tensors
    from medm2g.core.training.cross_guided import build_side

    plan, config, layout, stage, record = first_round
    assert stage.modalities == ("text", "xray")
    assert set(record["stage"]["trains"]) == {f"{m}.{p}" for m in ("text", "xray")
                                              for p in ("context_encoder", "adaptation", "cross_guidance")}
    assert set(record["final"]) >= {"cross_text", "cross_xray"}
    for modality in ("text", "xray"):
        saved = load_tensors(layout.cross_guided(modality))
        assert any(k.startswith("context_encoder.") for k in saved) and any(k.startswith("cross_guidance.") for k in saved)
        fresh = build_side(installed, modality, config, layout, load_trained=False).trained_state()
        assert any(not torch.equal(saved[k], fresh[k]) for k in saved if k.startswith("cross_guidance."))
        reloaded = build_side(installed, modality, config, layout, load_trained=True).trained_state()
        assert all(torch.equal(saved[k], reloaded[k]) for k in saved)


def test_each_side_attends_to_the_other_sides_latent_never_its_own(first_round, installed):
    from medm2g.core.training.cross_guided import build_side, side_loss

    plan, config, layout, _, _ = first_round
    sides = {m: build_side(installed, m, config, layout, load_trained=True) for m in ("text", "xray")}
    seen = {}
    for modality, side in sides.items():
        side.context_encoder.register_forward_pre_hook(lambda module, args, m=modality: seen.update({m: args[0]}))
    noisy = {"text": torch.randn(2, 768, 1, 1), "xray": torch.randn(2, 4, 16, 16)}
    noise = {m: torch.randn_like(v) for m, v in noisy.items()}
    embeddings = {m: torch.randn(2, config.embed_dim) for m in noisy}
    keep, timesteps = torch.ones(2, dtype=torch.bool), torch.tensor([50, 500])
    with torch.no_grad():
        base = side_loss("xray", "text", sides, noise, noisy, timesteps, embeddings, keep)
    assert set(seen) == {"text"} and seen["text"] is noisy["text"]  # V_text saw text's latent; V_xray unused
    with torch.no_grad():
        changed = side_loss("xray", "text", sides, noise, {**noisy, "text": torch.randn(2, 768, 1, 1)},
                            timesteps, embeddings, keep)
    assert not torch.equal(base, changed)  # the X-ray prediction depends on the text latent it is guided by


def test_independent_steps_show_the_guide_its_clean_latent_and_shared_steps_are_the_papers(first_round, installed):
    from medm2g.core.diffusion.schedule import training_scheduler
    from medm2g.core.training.cross_guided import build_side, independent_source, side_loss
    from medm2g.core.training.shards import SampleRandom, Shard

    def shard(seed: int) -> Shard:
        return Shard(0, (0, 1, 2, 3), (0, 1, 2, 3), SampleRandom(seed, range(4)), torch.Generator())

    plan, config, layout, _, _ = first_round
    scheduler = training_scheduler(config.diffusion)
    latents = torch.randn(4, 768, 1, 1)
    clean, steps = independent_source(scheduler, latents, shard(0), clean_source=1.0, device=torch.device("cpu"))
    assert torch.equal(clean, latents) and torch.equal(steps, torch.zeros(4, dtype=steps.dtype))  # t_B = 0: exact
    noisy, steps = independent_source(scheduler, latents, shard(1), clean_source=0.0, device=torch.device("cpu"))
    assert (steps > 0).all() and not torch.isclose(noisy, latents).all()
    mixed = [independent_source(scheduler, latents, shard(seed), 0.5, torch.device("cpu"))[1] for seed in range(20)]
    assert 0.3 < float(torch.cat(mixed).eq(0).float().mean()) < 0.7  # clean about half the time

    sides = {m: build_side(installed, m, config, layout, load_trained=True) for m in ("text", "xray")}
    seen = []
    sides["text"].context_encoder.register_forward_pre_hook(lambda module, args: seen.append((args[0], args[1])))
    noisy_pair = {"text": torch.randn(2, 768, 1, 1), "xray": torch.randn(2, 4, 16, 16)}
    targets = {m: torch.randn_like(v) for m, v in noisy_pair.items()}
    embeddings = {m: torch.randn(2, config.embed_dim) for m in noisy_pair}
    keep, timesteps = torch.tensor([True, False]), torch.tensor([50, 500])
    with torch.no_grad():
        side_loss("xray", "text", sides, targets, noisy_pair, timesteps, embeddings, keep)  # shared: the paper's
        source = (latents[:2], torch.zeros(2, dtype=torch.long))
        side_loss("xray", "text", sides, targets, noisy_pair, timesteps, embeddings, keep, source)
    (shared_latent, shared_steps), (clean_latent, clean_steps) = seen
    assert shared_latent is noisy_pair["text"] and torch.equal(shared_steps, timesteps)  # noised to the same t
    assert clean_latent is source[0] and torch.equal(clean_steps, torch.zeros(2, dtype=torch.long))
