"""Spatial guidance: residuals that fit the target UNet, start at zero, carry where the source's anatomy is."""

import attrs
import pytest
import torch

from medm2g.core.diffusion.spatial_guidance import (
    PairSpatialGuidance,
    SkipShapes,
    SpatialGuidance,
    supports_spatial_guidance,
)


def _as_trained(module):
    with torch.no_grad():  # fresh denoisers start with zeroed output layers
        for parameter in module.parameters():
            if not parameter.abs().sum():
                parameter.normal_(std=0.05)
    return module


@pytest.fixture
def ct_denoiser(installed):
    torch.manual_seed(0)
    return _as_trained(installed["ct"].unet("tiny", context_dim=16)).eval()


def test_the_skip_shapes_are_the_unets_own(ct_denoiser, installed):
    """diffusers checks every residual against its skip connection: the declared shapes are accepted."""
    down, mid = ct_denoiser.skip_connection_shapes()
    latent_shape = installed["ct"].spec.latent_shape
    z, t = torch.randn(2, *latent_shape), torch.tensor([3, 300])
    path = SpatialGuidance((4, 8, 8), SkipShapes(down, mid, latent_shape), width=8)
    residuals = _as_trained(path)(torch.randn(2, 4, 8, 8), torch.tensor([0, 5]), z, t)
    assert [tuple(r.shape[1:]) for r in residuals.down] == list(down)
    assert tuple(residuals.mid.shape[1:]) == tuple(mid) and tuple(residuals.out.shape[1:]) == tuple(latent_shape)
    assert down[0][1:] == latent_shape[1:]  # the first skip is at the latent grid
    context = torch.randn(2, 1, 16)
    with torch.no_grad():
        output = ct_denoiser(z, t, context, skip_residuals=residuals)
        without_out = ct_denoiser(z, t, context, skip_residuals=attrs.evolve(residuals, out=residuals.out * 0))
    assert output.shape == (2, *latent_shape)
    assert torch.allclose(output - without_out, residuals.out, atol=1e-5)  # the prediction's residual is added as is


def test_a_fresh_path_leaves_the_denoiser_unchanged_and_a_trained_one_moves_it_by_the_source(ct_denoiser, installed):
    latent_shape = installed["ct"].spec.latent_shape
    path = SpatialGuidance(latent_shape, SkipShapes(*ct_denoiser.skip_connection_shapes(), latent_shape), width=8)
    z, t, context = torch.randn(1, *latent_shape), torch.tensor([200]), torch.randn(1, 1, 16)
    source, clean = torch.randn(1, *latent_shape), torch.tensor([0])
    with torch.no_grad():
        plain = ct_denoiser(z, t, context)
        assert torch.equal(plain, ct_denoiser(z, t, context, skip_residuals=path(source, clean, z, t)))
        _as_trained(path)  # the zero convolutions, as a round leaves them
        one = ct_denoiser(z, t, context, skip_residuals=path(source, clean, z, t))
        other = ct_denoiser(z, t, context, skip_residuals=path(source.flip(-1), clean, z, t))
    assert not torch.allclose(one, plain)
    assert not torch.allclose(one, other)  # the source mirrored: a different output


def test_a_source_change_in_one_corner_moves_that_corner_most(ct_denoiser, installed):
    """Where the source differs is where the residuals differ: the path keeps place, unlike pooled tokens."""
    latent_shape = installed["ct"].spec.latent_shape
    torch.manual_seed(1)
    path = _as_trained(SpatialGuidance(latent_shape, SkipShapes(*ct_denoiser.skip_connection_shapes(), latent_shape),
                                       width=8))
    source, z, t = torch.randn(1, *latent_shape), torch.randn(1, *latent_shape), torch.tensor([300])
    changed = source.clone()
    changed[..., :2, :2] += 3.0
    with torch.no_grad():
        first = path(source, torch.tensor([0]), z, t).down[0] - path(changed, torch.tensor([0]), z, t).down[0]
    difference = first.abs().sum(1)[0]
    height, width = difference.shape
    assert difference[: height // 2, : width // 2].sum() > 3 * difference[height // 2:, width // 2:].sum()


def test_dropped_rows_get_no_residuals():
    path = _as_trained(SpatialGuidance((4, 8, 8), SkipShapes(((8, 8, 8), (8, 4, 4)), (16, 4, 4), (4, 8, 8)), width=8))
    residuals = path(torch.randn(3, 4, 8, 8), torch.tensor([0, 0, 0]), torch.randn(3, 4, 8, 8), torch.tensor([5, 5, 5]))
    residuals = residuals.scaled(torch.tensor([True, False, True]))
    assert residuals.down[0][1].abs().sum() == 0 and residuals.mid[1].abs().sum() == 0
    assert residuals.out[1].abs().sum() == 0 and residuals.out[0].abs().sum() > 0
    assert residuals.down[0][0].abs().sum() > 0


def test_only_spatial_sources_into_denoisers_with_skip_connections_get_a_path(installed, ct_denoiser):
    text_diffuser = installed["text"].unet("tiny", context_dim=16)
    assert supports_spatial_guidance(ct_denoiser, (4, 16, 16))
    assert not supports_spatial_guidance(ct_denoiser, (768, 1, 1))
    assert not supports_spatial_guidance(text_diffuser, (4, 16, 16))
    pair = PairSpatialGuidance(("text", "ct"), {"text": text_diffuser, "ct": ct_denoiser},
                               {"text": (768, 1, 1), "ct": (4, 16, 16)}, width=8)
    assert len(pair.paths) == 0 and pair.path("text", "ct") is None
    imaging = PairSpatialGuidance(("ct", "mri"), {"ct": ct_denoiser, "mri": ct_denoiser},
                                  {"ct": (4, 16, 16), "mri": (4, 8, 8)}, width=8)
    assert sorted(imaging.paths) == ["ct_to_mri", "mri_to_ct"]
    switched_off = PairSpatialGuidance(("ct", "mri"), {"ct": ct_denoiser, "mri": ct_denoiser},
                                       {"ct": (4, 16, 16), "mri": (4, 8, 8)}, width=None)
    assert len(switched_off.paths) == 0
