"""The text VAE from a local BERT encoder and GPT-2 decoder, each with its own tokenizer (Optimus's pairing),
and a whole run of the shipped graph started from the example's tiny pretrained folders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from medm2g.core.errors import CheckpointError

EXAMPLE = Path(__file__).parents[3] / "examples" / "make_tiny_pretrained.py"
REPORTS = ["Findings: a 30 mm haemorrhage in the right frontal lobe. Impression: right frontal haemorrhage.",
           "No focal lesion."]


def _example():
    spec = importlib.util.spec_from_file_location("make_tiny_pretrained", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    module = _example()
    module.make_text_pair(root / "bert", root / "gpt2")
    return root


def test_the_halves_start_from_the_folders_with_their_own_tokenizers(folders, installed):
    from safetensors.torch import load_file

    vae = installed["text"].vae("tiny", {"pretrained_encoder": str(folders / "bert"),
                                         "pretrained_decoder": str(folders / "gpt2")})
    for half, folder in ((vae.encoder, "bert"), (vae.decoder, "gpt2")):
        saved = load_file(folders / folder / "model.safetensors")
        state = half.state_dict()
        assert all(torch.equal(state[name], value) for name, value in saved.items() if name in state), folder
    end = vae.decoder_tokenizer.eos_token_id
    assert vae.tokens.start == vae.tokens.stop == vae.tokens.pad == end  # GPT-2's one special token
    assert len(vae.tokenizer) != len(vae.decoder_tokenizer)
    assert vae.bag_of_words.out_features == len(vae.decoder_tokenizer)
    assert vae.latent_to_memory.out_features == 24 and vae.to_posterior.in_features == 32  # each half's own width
    loss, logs = vae.training_loss(REPORTS, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and logs["token_ce"] > 0
    loss.backward()
    assert vae.decoder.transformer.wte.weight.grad is not None
    texts = vae.decode(vae.encode(REPORTS, generator=torch.Generator().manual_seed(1)), max_length=6)
    assert len(texts) == 2 and all(isinstance(text, str) for text in texts)


def test_folders_that_do_not_fit_are_refused_in_one_line(folders, installed, tmp_path):
    text = installed["text"]
    with pytest.raises(CheckpointError, match=r"gpt2: writes 129 positions, the text VAE needs 257"):
        text.vae("paper", {"pretrained_decoder": str(folders / "gpt2")})  # the paper size reads 256 tokens
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match=r"holds pickle weights only \(pytorch_model.bin\); medm2g loads"):
        text.vae("tiny", {"pretrained_encoder": str(pickled)})


def test_the_shipped_graph_trains_from_the_example_folders(tmp_path, monkeypatch):
    """The issue's done-when: the example script's folders and run config train the demo graph."""
    import json

    from medm2g.core.apps.cli import main

    monkeypatch.setattr("sys.argv", ["make_tiny_pretrained.py", str(tmp_path)])
    _example().main()
    config = tmp_path / "pretrained-tiny.yaml"
    out = tmp_path / "run"
    assert main(["train", "medm2g.yaml", "--config", str(config), "--out", str(out), "--device", "cpu"]) == 0
    stages = out / "stages"
    assert len(list(stages.glob("*/record.json"))) == 14
    ct_vae = json.loads((stages / "06-vae-ct" / "record.json").read_text())
    assert ct_vae["scaling_factor"] == pytest.approx(0.18215)  # Stable Diffusion's, kept
    # what the run's stages build before their first step: the folders' weights (adapted layers aside)
    from safetensors.torch import load_file

    from medm2g.core.config.run_config import load_run_config
    from medm2g.core.training.autoencoding import build_vae
    from medm2g.core.training.latent_diffusion import build_denoiser
    from medm2g.registry import load_modalities

    run_config = load_run_config(out / "config.yaml")
    registry = run_config.modalities(load_modalities())
    start = build_vae(registry, "mri", run_config).autoencoder.state_dict()
    saved = load_file(tmp_path / "stable-diffusion" / "vae" / "diffusion_pytorch_model.safetensors")
    adapted = ("encoder.conv_in", "decoder.conv_out")  # RGB -> grey
    assert all(torch.equal(start[k], v) for k, v in saved.items() if not k.startswith(adapted))
    unet = build_denoiser(registry, "xray", run_config).unet.state_dict()
    saved = load_file(tmp_path / "stable-diffusion" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(unet[k], v) for k, v in saved.items())
    text = build_vae(registry, "text", run_config)
    gpt2 = load_file(tmp_path / "gpt2" / "model.safetensors")
    assert torch.equal(text.decoder.transformer.wte.weight, gpt2["transformer.wte.weight"])
