"""The latent cache: the same latents as encoding afresh, kept across instances, invalidated by a
changed VAE or a changed sample, and an LDM step that computes the same loss with it as without."""

import pytest
import torch

from medm2g.core.diffusion.schedule import DiffusionConfig, training_scheduler
from medm2g.core.training.latent_cache import LatentCache, warm
from medm2g.core.training.latent_diffusion import FrozenEncodings, LatentDiffusionStep
from medm2g.core.training.shards import Batching, shards
from medm2g.registry import ModelSize

CPU = torch.device("cpu")


@pytest.fixture()
def models(installed):
    torch.manual_seed(0)
    return installed["ct"].vae(ModelSize.TINY).eval(), installed["ct"].prompt_encoder(ModelSize.TINY, 16).eval()


def images(count: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 64, 64, generator=generator) * 2 - 1 for _ in range(count)]


def shard_of(size: int, seed: int):
    """The one micro-batch of a one-process step over ``size`` records."""
    (shard,) = shards(Batching(size, size, seed=0), step=0, step_seed=seed, process=0, processes=1, micro_batches=1)
    return shard


def test_cached_latents_and_embeddings_equal_encoding_afresh(models, tmp_path):
    vae, encoder = models
    samples = images(5)
    cache = LatentCache(tmp_path, "ct", vae, encoder)
    records = [{"ct": sample} for sample in samples]
    cached = FrozenEncodings("ct", vae, encoder, records, warm(cache, records, "ct", CPU))(shard_of(5, seed=3), CPU)
    fresh = FrozenEncodings("ct", vae, encoder, records)(shard_of(5, seed=3), CPU)
    for kept, encoded in zip(cached, fresh):  # the latents (drawn per sample) and the embeddings
        torch.testing.assert_close(kept, encoded, atol=1e-5, rtol=1e-5)
    assert (cache.hits, cache.misses) == (0, 5)


def test_a_second_run_reads_the_file_and_encodes_nothing(models, tmp_path, monkeypatch):
    vae, encoder = models
    samples = images(4)
    first = LatentCache(tmp_path, "ct", vae, encoder).lookup(samples, CPU)
    monkeypatch.setattr(vae, "posterior", lambda _x: pytest.fail("encoded a cached sample"))
    again = LatentCache(tmp_path, "ct", vae, encoder)
    for before, after in zip(first, again.lookup(samples[::-1], CPU)):
        torch.testing.assert_close(after, before.flip(0))
    assert (again.hits, again.misses) == (4, 0)


def test_a_changed_vae_gets_a_new_file_and_a_changed_sample_is_a_miss(models, tmp_path):
    vae, encoder = models
    samples = images(3)
    cache = LatentCache(tmp_path, "ct", vae, encoder)
    cache.lookup(samples, CPU)
    with torch.no_grad():
        next(vae.parameters()).add_(0.01)  # "retrained"
    retrained = LatentCache(tmp_path, "ct", vae, encoder)
    assert retrained.path != cache.path and not retrained.locations
    assert len(list(tmp_path.iterdir())) == 1  # the new file is written on its first lookup
    retrained.lookup(samples, CPU)
    assert retrained.misses == 3
    windowed = [s.clamp(-0.5, 0.5) for s in samples]  # another preprocessing of the same files
    retrained.lookup(windowed + samples[:1], CPU)
    assert (retrained.misses, retrained.hits) == (6, 1)


def test_an_ldm_step_computes_the_same_loss_with_and_without_the_cache(installed, models, tmp_path):
    vae, encoder = models
    torch.manual_seed(1)
    denoiser = installed["ct"].unet(ModelSize.TINY, 16)
    records = [{"ct": sample} for sample in images(4, seed=5)]
    scheduler = training_scheduler(DiffusionConfig())
    losses = []
    for cached in (None, warm(LatentCache(tmp_path, "ct", vae, encoder), records, "ct", CPU)):
        step = LatentDiffusionStep(FrozenEncodings("ct", vae, encoder, records, cached), denoiser, scheduler, 0.1)
        with torch.no_grad():
            loss, _ = step(shard_of(4, seed=9), CPU)
        losses.append(float(loss))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_the_cache_grows_by_new_shards_read_by_index_and_never_rewrites_one(models, tmp_path, monkeypatch):
    vae, encoder = models
    samples = images(7)
    cache = LatentCache(tmp_path, "ct", vae, encoder, shard_rows=2)
    first = [{"ct": s} for s in samples[:5]]
    expected = cache.lookup(samples[:5], CPU)
    shards = sorted(cache.path.glob("shard-*.safetensors"))
    assert len(shards) == 3  # 2 + 2 + 1 rows
    written = {path: path.read_bytes() for path in shards}
    cache.lookup(samples[3:], CPU)  # two known, two new: one more shard
    assert len(list(cache.path.glob("shard-*.safetensors"))) == 4
    assert all(path.read_bytes() == data for path, data in written.items())
    monkeypatch.setattr(vae, "posterior", lambda _x: pytest.fail("encoded a cached sample"))
    records = warm(LatentCache(tmp_path, "ct", vae, encoder, shard_rows=2), first, "ct", CPU)
    for by_index, by_content in zip(records.read([4, 0, 2], CPU), expected):
        torch.testing.assert_close(by_index, by_content[[4, 0, 2]], rtol=0, atol=0)
