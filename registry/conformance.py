"""The checks every modality plugin must pass, for medm2g's own and third-party plugins.

medm2g runs them over every installed modality; a plugin author runs them on their
own package by subclassing in a test file::

    from medm2g.registry.conformance import ModalityConformance

    class TestPetConformance(ModalityConformance):
        modality_name = "pet"

The checks call every method of the contract (:mod:`medm2g.registry.protocols`): the prompt
encoder's ``forward``; the VAE's ``encode``, ``decode``, ``training_loss``, ``scaling_factor`` and
``set_scaling_factor`` (and ``posterior``/``sample_latents``/``export_pretrained`` where present);
the denoiser's ``forward`` with and without ``guidance``, with the cross-guidance sub-layers
attached as the multi-flow rounds attach them. Models are built at the ``tiny`` size, so the
whole class runs in seconds on a CPU.

This module sits at the top of the import layers (beside ``medm2g.plugins``): it builds
cross-guidance from :mod:`medm2g.core.diffusion` as training does, and nothing imports it.
"""

from __future__ import annotations

import math
from typing import Mapping

import pytest
import torch

from medm2g.core.diffusion.conditional import condition_context
from medm2g.core.diffusion.cross_guidance import Adaptation, ContextEncoder, CrossGuidanceConfig, attach_cross_guidance
from medm2g.core.errors import DataError
from medm2g.registry.manager import Modality, load_modalities
from medm2g.registry.protocols import (
    Denoiser,
    ExportsPretrained,
    LatentVAE,
    PosteriorSampler,
    PromptEncoder,
    missing_members,
)
from medm2g.registry.specs import ModelSize

EMBED_DIM = 16
CONTEXT_DIM = 24
GUIDANCE_DIM = 20
"""Width of the guidance tokens V_B([z_t^B, f_B]); unlike a run (embed_dim everywhere), each
width differs here, so a denoiser that confuses them fails."""
GUIDANCE = CrossGuidanceConfig(width=16, layers=1, heads=2, adaptation_tokens=2, patch=4)
BATCH = 2
REPORTS = ["No acute cardiopulmonary abnormality.", "Small left lower lobe nodule measuring 8 mm."]


def example_batch(modality: Modality, batch: int = BATCH, seed: int = 0):
    """Model-space examples: smooth random images in [-1, 1], or two short reports."""
    spec = modality.spec
    if not spec.kind.is_imaging:
        return REPORTS[:batch] if batch <= len(REPORTS) else [REPORTS[i % 2] for i in range(batch)]
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((batch, spec.channels, 8, 8), generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=spec.image_size, mode="bilinear", align_corners=False)
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low) * 2 - 1


def _assert_finite(tensor: torch.Tensor, what: str) -> None:
    assert torch.isfinite(tensor).all(), f"{what} has non-finite values"


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _same_samples(a, b) -> bool:
    """Decoded batches agree: images to float precision, reports exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    return list(a) == list(b)


@torch.no_grad()
def _fill_zero_weights(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every all-zero weight matrix of ``module`` small random values, as training would: a
    fresh denoiser's zero-initialised output layers (the text diffuser's) would otherwise hide
    any change of its inner layers."""
    for parameter in module.parameters():
        if parameter.ndim > 1 and not parameter.any():
            fan_in = parameter[0].numel()
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))


class ModalityConformance:
    """Subclass and set ``modality_name``; or override the ``modality`` fixture."""

    modality_name: str | None = None

    @pytest.fixture(scope="class")
    @classmethod
    def modality(cls) -> Modality:
        if not cls.modality_name:
            pytest.fail("set modality_name on the conformance test class")
        return load_modalities()[cls.modality_name]

    def test_spec_name_matches_registration(self, modality):
        assert modality.spec.name == modality.name
        assert modality.spec.file_suffixes, "a modality must read at least one file type"

    def test_prompt_encoder_maps_a_batch_to_the_shared_space(self, modality):
        torch.manual_seed(0)
        encoder = modality.prompt_encoder(ModelSize.TINY, EMBED_DIM).eval()
        batch = example_batch(modality)
        with torch.no_grad():
            embeddings = encoder(batch)
        assert embeddings.shape == (BATCH, EMBED_DIM)
        _assert_finite(embeddings, "prompt encoder output")
        assert not torch.allclose(embeddings[0], embeddings[1]), "different inputs gave the same embedding"

    def test_prompt_encoder_is_trainable(self, modality):
        encoder = modality.prompt_encoder(ModelSize.TINY, EMBED_DIM).train()
        encoder(example_batch(modality)).pow(2).mean().backward()
        grads = [p.grad for p in encoder.parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)

    def test_vae_encodes_to_the_latent_shape_and_decodes_back(self, modality):
        torch.manual_seed(0)
        vae = modality.vae(ModelSize.TINY).eval()
        batch = example_batch(modality)
        with torch.no_grad():
            latents = vae.encode(batch, generator=torch.Generator().manual_seed(1))
            again = vae.encode(batch, generator=torch.Generator().manual_seed(1))
            decoded = vae.decode(latents)
        assert latents.shape == (BATCH, *modality.spec.latent_shape)
        _assert_finite(latents, "latents")
        assert torch.equal(latents, again), "encoding is not reproducible under a seeded generator"
        if modality.spec.kind.is_imaging:
            assert decoded.shape == batch.shape
            _assert_finite(decoded, "decoded sample")
        else:
            assert isinstance(decoded, list) and len(decoded) == BATCH and all(isinstance(t, str) for t in decoded)

    def test_unet_predicts_noise_shaped_like_the_latents(self, modality):
        torch.manual_seed(0)
        unet = modality.unet(ModelSize.TINY, CONTEXT_DIM)
        latents = torch.randn(BATCH, *modality.spec.latent_shape)
        context = torch.randn(BATCH, 3, CONTEXT_DIM)
        prediction = unet(latents, torch.tensor([10, 500]), context)
        assert prediction.shape == latents.shape
        _assert_finite(prediction, "noise prediction")
        # a loss linear in the prediction: zero-initialised output layers still get a gradient
        (prediction * torch.randn(prediction.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in unet.parameters())

    def test_built_parts_satisfy_the_protocols(self, modality):
        parts = {
            "prompt encoder": (modality.prompt_encoder(ModelSize.TINY, EMBED_DIM), PromptEncoder),
            "VAE": (modality.vae(ModelSize.TINY), LatentVAE),
            "denoiser": (modality.unet(ModelSize.TINY, CONTEXT_DIM), Denoiser),
        }
        for what, (part, protocol) in parts.items():
            assert isinstance(part, torch.nn.Module), f"the {what} must be a torch.nn.Module, got {type(part).__name__}"
            missing = missing_members(part, protocol)
            assert not missing, (f"the {what} ({type(part).__name__}) lacks {', '.join(missing)} "
                                 f"of medm2g.registry.{protocol.__name__}")
            assert isinstance(part, protocol)

    def test_vae_training_loss_is_a_finite_scalar_whose_gradient_reaches_the_vae(self, modality):
        torch.manual_seed(0)
        vae = modality.vae(ModelSize.TINY).train()
        batch = example_batch(modality)
        vae.encode(batch, generator=_seeded(0)).sum().backward()  # which parameters encode uses
        encoding = {name for name, p in vae.named_parameters() if p.grad is not None}
        vae.zero_grad(set_to_none=True)
        loss, logs = vae.training_loss(batch, generator=_seeded(1), kl_weight=1e-3)
        assert isinstance(loss, torch.Tensor) and loss.ndim == 0, f"the loss must be a scalar tensor, got {loss!r}"
        _assert_finite(loss, "training_loss")
        assert isinstance(logs, Mapping) and all(isinstance(k, str) for k in logs), "logs must map names to numbers"
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in logs.values()), f"logs: {logs}"
        loss.backward()
        reached = {name for name, p in vae.named_parameters() if p.grad is not None}
        assert all(torch.isfinite(p.grad).all() for p in vae.parameters() if p.grad is not None)
        unreached = sorted(encoding - reached)
        assert not unreached, f"training_loss gives no gradient to parameters encode uses: {', '.join(unreached[:5])}"
        assert reached - encoding, "training_loss reaches only the encoder: the decoder does not train"

    def test_vae_scaling_factor_round_trips_and_scales_the_latents(self, modality):
        torch.manual_seed(0)
        vae = modality.vae(ModelSize.TINY).eval()
        batch = example_batch(modality)
        assert isinstance(vae.scaling_factor, float)
        with torch.no_grad():
            vae.set_scaling_factor(1.0)
            assert vae.scaling_factor == 1.0
            unit = vae.encode(batch, generator=_seeded(1))
            decoded_unit = vae.decode(unit)
            vae.set_scaling_factor(0.5)  # a power of two: scaling and unscaling are exact
            assert vae.scaling_factor == 0.5, "set_scaling_factor(0.5) did not set scaling_factor"
            scaled = vae.encode(batch, generator=_seeded(1))
            decoded_scaled = vae.decode(scaled)
        assert torch.allclose(scaled, unit * 0.5, rtol=1e-5, atol=1e-6), "encode must multiply by scaling_factor"
        assert _same_samples(decoded_scaled, decoded_unit), "decode must divide by scaling_factor"

    def test_vae_posterior_draws_what_encode_draws(self, modality):
        vae = modality.vae(ModelSize.TINY).eval()
        if not isinstance(vae, PosteriorSampler):
            pytest.skip("optional: without posterior/sample_latents the latent cache encodes every step")
        batch = example_batch(modality)
        with torch.no_grad():
            mean, logvar = vae.posterior(batch)
            drawn = vae.sample_latents(mean, logvar, generator=_seeded(1))
            encoded = vae.encode(batch, generator=_seeded(1))
        assert mean.shape == logvar.shape and mean.shape[0] == BATCH
        assert drawn.shape == (BATCH, *modality.spec.latent_shape)
        assert torch.allclose(drawn, encoded, rtol=1e-5, atol=1e-6), \
            "sample_latents(*posterior(batch), generator) must equal encode(batch, generator)"

    def test_exported_models_write_a_folder(self, modality, tmp_path):
        parts = {"vae": modality.vae(ModelSize.TINY), "denoiser": modality.unet(ModelSize.TINY, CONTEXT_DIM)}
        exporting = {name: part for name, part in parts.items() if isinstance(part, ExportsPretrained)}
        if not exporting:
            pytest.skip("optional: no export_pretrained")
        for name, part in exporting.items():
            part.export_pretrained(tmp_path / name)
            assert (tmp_path / name).is_dir() and any((tmp_path / name).iterdir()), f"{name}: nothing exported"

    def test_denoiser_step_with_cross_guidance(self, modality):
        """One step as a multi-flow round takes it: a one-token context, theta_c attached beside
        every cross-attention, attending to V([z_t, f])."""
        torch.manual_seed(0)
        shape = modality.spec.latent_shape
        denoiser = modality.unet(ModelSize.TINY, CONTEXT_DIM).eval()
        _fill_zero_weights(denoiser, _seeded(5))
        latents, other = torch.randn(BATCH, *shape, generator=_seeded(1)), torch.randn(BATCH, *shape, generator=_seeded(2))
        timesteps = torch.tensor([10, 500])
        # the condition's prompt embedding as one token; the second row the null condition
        context = condition_context(torch.randn(BATCH, CONTEXT_DIM, generator=_seeded(3)), torch.tensor([True, False]))
        with torch.no_grad():
            plain = denoiser(latents, timesteps, context)
        try:
            layers = attach_cross_guidance(denoiser, guidance_dim=GUIDANCE_DIM)
        except ValueError as error:
            pytest.fail(f"{error}: build the denoiser's cross-attention from diffusers Attention blocks")
        context_encoder = ContextEncoder(shape, GUIDANCE_DIM, GUIDANCE)
        adaptation = Adaptation(GUIDANCE.adaptation_tokens, EMBED_DIM, GUIDANCE.width)
        guidance = context_encoder(other, timesteps, adaptation(BATCH))
        with torch.no_grad():
            attached = denoiser(latents, timesteps, context, guidance)
        assert attached.shape == latents.shape
        assert torch.allclose(attached, plain, rtol=1e-4, atol=1e-5), \
            "theta_c starts at zero: attaching it must leave the output unchanged"
        with torch.no_grad():  # as if a round had trained theta_c
            for layer in layers:
                layer.to_out.weight.copy_(torch.randn(layer.to_out.weight.shape, generator=_seeded(4)) * 0.1)
        guided = denoiser(latents, timesteps, context, guidance)
        assert guided.shape == latents.shape
        _assert_finite(guided, "guided noise prediction")
        assert not torch.allclose(guided, plain, rtol=1e-4, atol=1e-5), (
            "guidance does not change the output: forward(..., guidance) must pass it to the Attention "
            "blocks as cross_attention_kwargs={'guidance': guidance}")
        (guided * torch.randn(guided.shape, generator=_seeded(6))).sum().backward()
        for part, module in {"theta_c": torch.nn.ModuleList(layers), "V": context_encoder, "f": adaptation}.items():
            assert all(p.grad is not None for p in module.parameters()), f"the guided step gives {part} no gradient"

    def test_augmentation_is_seeded_and_keeps_shape_and_range(self, modality):
        if not modality.spec.kind.is_imaging:
            pytest.skip("text has no visual augmentation")
        augment = modality.augmentation()
        batch = example_batch(modality)
        first = augment(batch, torch.Generator().manual_seed(3))
        repeat = augment(batch, torch.Generator().manual_seed(3))
        other = augment(batch, torch.Generator().manual_seed(4))
        assert first.shape == batch.shape and first.dtype == batch.dtype
        assert first.min() >= -1 - 1e-5 and first.max() <= 1 + 1e-5
        assert torch.equal(first, repeat), "the same seed must give the same view"
        assert not torch.equal(first, other), "different seeds gave the same view"
        assert not torch.allclose(first, batch), "the view equals the input"
        one = augment(batch[:1], torch.Generator().manual_seed(3))  # how alignment calls it: per sample
        assert one.shape == batch[:1].shape, "the augmentation must work on a batch of one sample"

    def test_samples_round_trip_through_a_file(self, modality, tmp_path):
        spec = modality.spec
        if not spec.kind.is_imaging:
            written = modality.write(REPORTS[1], tmp_path / "report.txt")
            assert modality.read(written) == REPORTS[1]
            return
        sample = example_batch(modality, batch=1)[0]
        if spec.kind.value == "volume":
            sample = torch.stack([sample, sample.flip(-1)])  # (D, C, H, W)
        round_trips = 0
        for suffix in spec.file_suffixes:
            try:
                written = modality.write(sample, tmp_path / f"sample{suffix}")
            except DataError:
                continue  # a readable format this plugin does not write
            back = modality.read(written)
            assert back.shape == sample.shape, f"{suffix}: {tuple(back.shape)} != {tuple(sample.shape)}"
            error = (back - sample).abs().mean().item()
            correlation = torch.corrcoef(torch.stack([back.flatten(), sample.flatten()]))[0, 1].item()
            assert error < 0.03 and correlation > 0.99, f"{suffix}: mean error {error:.4f}, correlation {correlation:.4f}"
            round_trips += 1
        assert round_trips, f"{spec.name} writes none of the formats it reads ({', '.join(spec.file_suffixes)})"

    def test_a_broken_file_gives_a_data_error_naming_it(self, modality, tmp_path):
        for suffix in modality.spec.file_suffixes:
            broken = tmp_path / f"broken{suffix}"
            broken.write_bytes(b"\xff\xfe not a real file" if suffix != ".txt" else b"\xff\xfe\xfa")
            with pytest.raises(DataError) as error:
                modality.read(broken)
            assert str(broken) in str(error.value), f"{suffix}: the error does not name the file"
            assert "\n" not in str(error.value)
        with pytest.raises(DataError, match="not found"):
            modality.read(tmp_path / f"missing{modality.spec.file_suffixes[0]}")

