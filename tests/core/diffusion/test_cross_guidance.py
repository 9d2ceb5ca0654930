"""V_B and f_B (eq. 5): shapes for image and text latents, sensitivity, initialisation, gradients."""

import pytest
import torch

from medm2g.core.diffusion.cross_guidance import Adaptation, ContextEncoder, CrossGuidanceConfig

CONFIG = CrossGuidanceConfig(width=32, layers=1, heads=2, adaptation_tokens=3, patch=4)


@pytest.mark.parametrize("latent_shape, tokens", [((4, 16, 16), 16), ((768, 1, 1), 1), ((4, 8, 8), 4)])
def test_the_context_encoder_turns_any_latent_into_context_tokens(latent_shape, tokens):
    torch.manual_seed(0)
    encoder = ContextEncoder(latent_shape, context_dim=24, config=CONFIG)
    adaptation = Adaptation(CONFIG.adaptation_tokens, embed_dim=16, width=CONFIG.width)
    context = encoder(torch.randn(2, *latent_shape), torch.tensor([3, 700]), adaptation(2))
    assert context.shape == (2, tokens + 3, 24)


def test_the_context_depends_on_bs_latent_and_its_timestep():
    torch.manual_seed(0)
    encoder = ContextEncoder((4, 16, 16), 24, CONFIG).eval()
    f = Adaptation(3, 16, CONFIG.width)(1)
    latent = torch.randn(1, 4, 16, 16)
    base = encoder(latent, torch.tensor([100]), f)
    assert not torch.allclose(base, encoder(latent + 0.5 * torch.randn_like(latent), torch.tensor([100]), f))
    assert not torch.allclose(base, encoder(latent, torch.tensor([900]), f))


def test_f_b_starts_at_sampled_prompt_embeddings_and_trains():
    adaptation = Adaptation(3, embed_dim=16, width=CONFIG.width)
    embeddings = torch.randn(10, 16)
    adaptation.initialise_from(embeddings, torch.Generator().manual_seed(0))
    rows = [int(torch.nonzero((embeddings == seed).all(1))[0]) for seed in adaptation.seeds]
    assert len(rows) == 3  # every seed is one of the embeddings
    encoder = ContextEncoder((4, 8, 8), 24, CONFIG)
    encoder(torch.randn(2, 4, 8, 8), torch.tensor(5), adaptation(2)).pow(2).mean().backward()
    assert adaptation.seeds.grad is not None and adaptation.seeds.grad.abs().sum() > 0
    assert adaptation.embedding_layer.weight.grad.abs().sum() > 0


def test_a_grid_that_does_not_split_into_patches_is_refused():
    encoder = ContextEncoder((4, 16, 16), 24, CONFIG)
    with pytest.raises(ValueError, match="not divisible into 4x4 patches"):
        encoder(torch.randn(1, 4, 10, 10), torch.tensor(1), Adaptation(3, 16, CONFIG.width)(1))


@pytest.fixture(params=["xray", "text"])
def denoiser_and_inputs(request, installed):
    torch.manual_seed(0)
    spec = installed[request.param].spec
    denoiser = installed[request.param].unet("tiny", context_dim=16).eval()
    with torch.no_grad():  # as if trained: fresh denoisers start with zeroed output layers
        for parameter in denoiser.parameters():
            if not parameter.abs().sum():
                parameter.normal_(std=0.05)
    latents = torch.randn(2, *spec.latent_shape)
    return denoiser, latents, torch.tensor([10, 600]), torch.randn(2, 1, 16)


def test_attaching_the_sub_layer_keeps_the_output_until_it_trains(denoiser_and_inputs):
    from medm2g.core.diffusion.cross_guidance import attach_cross_guidance

    denoiser, latents, timesteps, context = denoiser_and_inputs
    with torch.no_grad():
        before = denoiser(latents, timesteps, context)
        layers = attach_cross_guidance(denoiser, guidance_dim=24)
        guidance = torch.randn(2, 5, 24)
        assert torch.allclose(denoiser(latents, timesteps, context, guidance), before, atol=1e-6)
        for layer in layers:
            torch.nn.init.normal_(layer.to_out.weight, std=0.1)
        guided = denoiser(latents, timesteps, context, guidance)
        assert not torch.allclose(guided, before, atol=1e-4)
        assert not torch.allclose(guided, denoiser(latents, timesteps, context, guidance.flip(0)), atol=1e-4)
        assert torch.allclose(denoiser(latents, timesteps, context), before, atol=1e-6)  # no guidance: as before


def test_the_parameter_groups_partition_the_denoiser_and_gradients_stay_in_the_trained_group(denoiser_and_inputs):
    from medm2g.core.diffusion.cross_guidance import attach_cross_guidance, denoiser_parameter_groups

    denoiser, latents, timesteps, context = denoiser_and_inputs
    attach_cross_guidance(denoiser, guidance_dim=24)
    groups = denoiser_parameter_groups(denoiser)
    ids = [id(p) for group in groups.values() for p in group]
    assert len(ids) == len(set(ids)) == len(list(denoiser.parameters()))
    assert all(groups[name] for name in ("backbone", "condition_attention", "cross_guidance"))
    denoiser.requires_grad_(False)
    for parameter in groups["cross_guidance"]:
        parameter.requires_grad_(True)
    denoiser(latents, timesteps, context, torch.randn(2, 5, 24)).pow(2).mean().backward()
    assert all(p.grad is None for p in groups["backbone"] + groups["condition_attention"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["cross_guidance"])
