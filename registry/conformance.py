"""The checks every modality plugin must pass, for medm2g's own and third-party plugins.

medm2g runs them over every installed modality; a plugin author runs them on their
own package by subclassing in a test file::

    from medm2g.registry.conformance import ModalityConformance

    class TestPetConformance(ModalityConformance):
        modality_name = "pet"

Models are built at the ``tiny`` size, so the whole class runs in seconds on a CPU.
"""

from __future__ import annotations

import pytest
import torch

from medm2g.core.errors import DataError
from medm2g.registry.manager import Modality, load_modalities
from medm2g.registry.specs import ModelSize

EMBED_DIM = 16
CONTEXT_DIM = 24
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

