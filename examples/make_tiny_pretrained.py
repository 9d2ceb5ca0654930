"""Write tiny stand-ins of the pretrained folders the paper starts from, in their standard layouts.

    python examples/make_tiny_pretrained.py FOLDER

makes ``FOLDER/stable-diffusion`` (diffusers: ``vae/``, ``unet/``, RGB, 4 latent channels, cross-attention
width 48, like SD 1.5's layout at a toy size), ``FOLDER/bert`` and ``FOLDER/gpt2`` (transformers, with
their tokenizers), and ``FOLDER/pretrained-tiny.yaml``, a run config that starts every image VAE and
UNet of the shipped graph from the Stable Diffusion folder and the text VAE from the BERT/GPT-2 pair:

    medm2g train medm2g.yaml --config FOLDER/pretrained-tiny.yaml --out run

Real weights go in the same places (``runwayml/stable-diffusion-v1-5`` downloaded by you, say); see
``medm2g config paper-pretrained``. Everything here is random and built from configs: nothing is
downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CONFIG = """\
# made by examples/make_tiny_pretrained.py: every image VAE and UNet from a (tiny) Stable Diffusion
# folder, the text VAE from a (tiny) BERT encoder and GPT-2 decoder, as the paper initialises them
size: tiny
phantom_subjects: 40
embed_dim: 32
alignment: {{steps: 3, batch_size: 8}}
vae: {{steps: 3, text_steps: 3, batch_size: 8}}
ldm: {{steps: 3, text_steps: 3, batch_size: 8}}
cross_guidance: {{width: 32, heads: 2, steps: 3, batch_size: 8}}
diffusion: {{sampling_steps: 4}}
grids:
  xray: {{image_size: [64, 64], latent_shape: [4, 16, 16]}}
  ct: {{image_size: [64, 64], latent_shape: [4, 16, 16]}}
  mri: {{image_size: [64, 64], latent_shape: [4, 16, 16]}}
models:
{models}
"""


def make_stable_diffusion(folder: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                  up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
                  latent_channels=4, norm_num_groups=4, sample_size=64,
                  scaling_factor=0.18215).save_pretrained(folder / "vae", safe_serialization=True)
    UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(16, 32),
                         layers_per_block=1, cross_attention_dim=48, attention_head_dim=8,
                         norm_num_groups=4).save_pretrained(folder / "unet", safe_serialization=True)
    return folder


def gpt2_style_tokenizer(size: int = 600):
    """A byte-level BPE tokenizer with GPT-2's one special token (<|endoftext|>: start, stop and
    padding), trained on the report words of medm2g's shipped vocabulary."""
    import importlib.resources

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = importlib.resources.files("medm2g.plugins.text").joinpath("vocabulary.txt").read_text(encoding="utf-8")
    lines = [line for line in words.splitlines() if line.isalpha()]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([" ".join(lines[i:i + 12]) for i in range(0, len(lines), 12)],
                            trainers.BpeTrainer(vocab_size=size, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def make_text_pair(bert: Path, gpt2: Path) -> tuple[Path, Path]:
    """A BERT encoder with medm2g's WordPiece vocabulary and a GPT-2 decoder with a byte-level BPE one:
    two tokenizers, as Optimus pairs BERT-base and GPT-2."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    from medm2g.plugins.text.plugin import default_tokenizer

    wordpiece, bpe = default_tokenizer(), gpt2_style_tokenizer()
    BertModel(BertConfig(vocab_size=len(wordpiece), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128, pad_token_id=wordpiece.pad_token_id),
              add_pooling_layer=False).save_pretrained(bert, safe_serialization=True)
    end = bpe.eos_token_id
    GPT2LMHeadModel(GPT2Config(vocab_size=len(bpe), n_positions=129, n_embd=24, n_layer=1, n_head=2,
                               bos_token_id=end, eos_token_id=end)).save_pretrained(gpt2, safe_serialization=True)
    wordpiece.save_pretrained(bert)
    bpe.save_pretrained(gpt2)
    return bert, gpt2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    folder = parser.parse_args().folder
    stable_diffusion = make_stable_diffusion(folder / "stable-diffusion")
    bert, gpt2 = make_text_pair(folder / "bert", folder / "gpt2")
    image = "\n".join(f"  {m}: {{vae: {{pretrained: {stable_diffusion.resolve()}}}, "
                      f"unet: {{pretrained: {stable_diffusion.resolve()}}}}}" for m in ("xray", "ct", "mri"))
    text = f"  text: {{vae: {{pretrained_encoder: {bert.resolve()}, pretrained_decoder: {gpt2.resolve()}}}}}"
    (folder / "pretrained-tiny.yaml").write_text(CONFIG.format(models=image + "\n" + text), encoding="utf-8")
    print(f"written: {stable_diffusion}, {bert}, {gpt2}, {folder / 'pretrained-tiny.yaml'}")


if __name__ == "__main__":
    main()
