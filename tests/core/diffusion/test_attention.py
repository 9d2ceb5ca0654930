"""The attention kernel: SDPA by default and wherever xformers cannot run, the fallback logged;
switching a cross-guided denoiser keeps its guidance sub-layers and its outputs."""

import logging

import pytest
import torch

from medm2g.core.config.run_config import structure_run_config
from medm2g.core.diffusion import attention
from medm2g.core.diffusion.attention import attend, choose_attention, configure_attention
from medm2g.core.diffusion.cross_guidance import CrossGuidedAttnProcessor, GuidanceAttention, attach_cross_guidance
from medm2g.registry import ModelSize

CPU = torch.device("cpu")


def test_auto_is_sdpa_on_a_cpu_even_with_xformers_installed(monkeypatch):
    monkeypatch.setattr(attention, "xformers_available", lambda: True)
    assert choose_attention("auto", CPU) == attention.AttentionChoice("sdpa", "xformers has no kernels for cpu")


def test_auto_without_xformers_is_sdpa_and_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(attention, "xformers_available", lambda: False)
    choice = choose_attention("auto", torch.device("cuda"))
    assert choice.name == "sdpa" and "xformers package is not installed" in choice.reason


def test_auto_with_cuda_and_xformers_is_xformers(monkeypatch):
    monkeypatch.setattr(attention, "xformers_available", lambda: True)
    assert choose_attention("auto", torch.device("cuda")).name == "xformers"


def test_asking_for_xformers_where_it_cannot_run_falls_back_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(attention, "xformers_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="medm2g"):
        assert choose_attention("xformers", CPU).name == "sdpa"
    assert "xformers was asked for, using PyTorch SDPA instead" in caplog.text


def test_an_unknown_kernel_is_refused_in_the_run_config():
    with pytest.raises(Exception, match="attention"):
        structure_run_config({"attention": "flash"})


def test_attend_matches_attention_written_out():
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 3, 5, 8, generator=generator) for _ in range(3))
    weights = torch.softmax(query @ key.transpose(-1, -2) / 8 ** 0.5, dim=-1)
    torch.testing.assert_close(attend(query, key, value), weights @ value, atol=1e-5, rtol=1e-5)


def test_configuring_a_cross_guided_denoiser_keeps_its_sub_layers_and_its_output(installed, caplog):
    torch.manual_seed(0)
    denoiser = installed["ct"].unet(ModelSize.TINY, 16).eval()
    layers = attach_cross_guidance(denoiser, guidance_dim=16)
    for layer in layers:
        torch.nn.init.normal_(layer.to_out.weight)  # make theta_c matter
    latents, context, guidance = torch.randn(2, 4, 16, 16), torch.randn(2, 1, 16), torch.randn(2, 3, 16)
    timesteps = torch.tensor([10, 500])
    with torch.no_grad():
        before = denoiser(latents, timesteps, context, guidance)
        with caplog.at_level(logging.INFO, logger="medm2g"):
            choice = configure_attention(denoiser, "auto", CPU)
        after = denoiser(latents, timesteps, context, guidance)
    assert choice.name == "sdpa" and "attention: sdpa" in caplog.text
    processors = [m.processor for m in denoiser.modules()
                  if isinstance(getattr(m, "processor", None), CrossGuidedAttnProcessor)]
    assert len(processors) == len(layers) and all(isinstance(p.guidance_attention, GuidanceAttention) for p in processors)
    torch.testing.assert_close(after, before)
