"""Image VAEs and UNets from a local Stable Diffusion folder: loaded from exactly those weights, adapted by
the documented rules, and refused with one line naming the folder when they cannot fit."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import attrs
import pytest
import torch

from medm2g.core.errors import ConfigError, PluginError

EXAMPLE = Path(__file__).parents[3] / "examples" / "make_tiny_pretrained.py"


@pytest.fixture(scope="module")
def stable_diffusion(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("make_tiny_pretrained", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_stable_diffusion(tmp_path_factory.mktemp("sd") / "stable-diffusion")


@pytest.fixture(scope="module")
def ct(installed):
    return installed["ct"]


def _state(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(next(folder.glob("*.safetensors")))


def test_the_vae_starts_from_the_folders_weights_with_rgb_adapted_to_grey(stable_diffusion, ct):
    vae = ct.vae("tiny", {"pretrained": str(stable_diffusion)})
    saved = _state(stable_diffusion / "vae")
    mine = vae.autoencoder.state_dict()
    adapted = {"encoder.conv_in.weight", "decoder.conv_out.weight", "decoder.conv_out.bias"}
    assert set(mine) == set(saved)
    for name in set(saved) - adapted:
        assert torch.equal(mine[name], saved[name]), name
    torch.testing.assert_close(mine["encoder.conv_in.weight"], saved["encoder.conv_in.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(mine["decoder.conv_out.weight"], saved["decoder.conv_out.weight"].mean(0, keepdim=True))
    assert vae.scaling_factor == pytest.approx(0.18215) and vae.keeps_pretrained_scale
    grey = torch.rand(2, 1, 64, 64) * 2 - 1
    assert vae.encode(grey).shape == (2, 4, 16, 16) and vae.decode(torch.zeros(2, 4, 16, 16)).shape == (2, 1, 64, 64)
    # a grey image encodes as the pretrained RGB encoder encoded it repeated in R, G and B
    from diffusers import AutoencoderKL

    rgb = AutoencoderKL.from_pretrained(stable_diffusion / "vae", use_safetensors=True)
    with torch.no_grad():
        torch.testing.assert_close(vae.posterior(grey)[0], rgb.encode(grey.expand(-1, 3, -1, -1)).latent_dist.mean,
                                   rtol=1e-4, atol=1e-5)


def test_the_unet_starts_from_the_folders_weights_with_a_projection_onto_its_width(stable_diffusion, ct):
    denoiser = ct.unet("tiny", 32, {"pretrained": str(stable_diffusion)})
    saved = _state(stable_diffusion / "unet")
    assert all(torch.equal(denoiser.unet.state_dict()[name], value) for name, value in saved.items())
    assert denoiser.context_projection.in_features == 32 and denoiser.context_projection.out_features == 48
    noise = denoiser(torch.zeros(2, 4, 16, 16), torch.tensor([1, 500]), torch.zeros(2, 1, 32))
    assert noise.shape == (2, 4, 16, 16)
    assert ct.unet("tiny", 48, {"pretrained": str(stable_diffusion)}).context_projection is None  # widths agree


def test_a_folder_that_does_not_fit_is_refused_in_one_line(stable_diffusion, ct, tmp_path):
    wide = attrs.evolve(ct.spec, latent_shape=(4, 8, 8))  # a factor-8 grid, as Stable Diffusion 1.5's
    from medm2g.core.models.pretrained_diffusers import pretrained_autoencoder, pretrained_unet

    with pytest.raises(ConfigError, match=r"its latents have 4 channels at 1/4 of the image, ct's spec 4 at 1/8"):
        pretrained_autoencoder(stable_diffusion, wide)
    with pytest.raises(ConfigError, match=r"not a diffusers AutoencoderKL folder: expected .*vae/config.json"):
        ct.vae("tiny", {"pretrained": str(tmp_path)})
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ConfigError, match=r"no .safetensors weights \(medm2g never unpickles a .bin file"):
        pretrained_unet(tmp_path, ct.spec)
    with pytest.raises(ConfigError, match=r"a UNet for 4-channel latents, ct's are 8-channel"):
        pretrained_unet(stable_diffusion, attrs.evolve(ct.spec, latent_shape=(8, 16, 16)))
    with pytest.raises(PluginError, match=r"models.ct.vae: unknown option 'pretrain' \(did you mean 'pretrained'\?\)"):
        ct.vae("tiny", {"pretrain": str(stable_diffusion)})
