"""C_M for text: a BERT-style encoder built from a config (or a local folder) plus a projection head."""

from __future__ import annotations

import pickle
from pathlib import Path

import attrs
import torch
from safetensors import SafetensorError
from torch import nn
from transformers import BertConfig, BertModel, PreTrainedTokenizerBase

from medm2g.core.errors import CheckpointError


@attrs.frozen
class TextEncoderConfig:
    """A BERT built from these sizes; ``pretrained`` names a local Hugging Face folder
    (a radiology BERT on disk, say) to load instead."""

    hidden_size: int
    layers: int
    heads: int
    max_length: int = 128
    pretrained: str | None = None


def load_local_model(folder: str, model_class, label: str):
    """A local Hugging Face folder's ``model_class`` (``label`` names it in messages), from safetensors
    weights only: a pickle (``pytorch_model.bin``) can run code when loaded, so medm2g never
    unpickles one; every way a folder can fail to load is a one-line :class:`CheckpointError`."""
    path = Path(folder)
    pickles = sorted(p.name for p in path.glob("*.bin")) if path.is_dir() else []
    if pickles and not any(path.glob("*.safetensors")):
        raise CheckpointError(
            f"{folder}: holds pickle weights only ({', '.join(pickles[:3])}); medm2g loads safetensors and never "
            f"unpickles a file. Convert the folder where you trust it: {model_class.__name__}.from_pretrained(DIR)"
            f".save_pretrained(DIR) writes model.safetensors")
    try:
        return model_class.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, SafetensorError, pickle.UnpicklingError) as error:
        reason = " ".join(str(error).split())[:300]  # one line, and not a page of it
        raise CheckpointError(f"{folder}: not a local Hugging Face {label} folder with safetensors weights: "
                              f"{type(error).__name__}: {reason}") from None


def load_pretrained_bert(folder: str) -> BertModel:
    """A local Hugging Face BERT folder's model (safetensors only, see :func:`load_local_model`)."""
    return load_local_model(folder, BertModel, "BERT")


class TextPromptEncoder(nn.Module):
    """Maps a list of reports to (B, embed_dim) embeddings: masked mean of the last hidden states, projected."""

    def __init__(self, config: TextEncoderConfig, tokenizer: PreTrainedTokenizerBase, embed_dim: int):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        if config.pretrained:
            self.bert = load_pretrained_bert(config.pretrained)
        else:
            self.bert = BertModel(
                BertConfig(
                    vocab_size=len(tokenizer),
                    hidden_size=config.hidden_size,
                    num_hidden_layers=config.layers,
                    num_attention_heads=config.heads,
                    intermediate_size=4 * config.hidden_size,
                    max_position_embeddings=config.max_length,
                    pad_token_id=tokenizer.pad_token_id,
                )
            )
        self.projection = nn.Linear(self.bert.config.hidden_size, embed_dim)

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = self.projection.weight.device
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        ).to(device)
        hidden = self.bert(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.projection(pooled)
