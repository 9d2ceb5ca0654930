"""C_M for text: a BERT-style encoder built from a config (or a local folder) plus a projection head."""

from __future__ import annotations

import attrs
import torch
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


class TextPromptEncoder(nn.Module):
    """Maps a list of reports to (B, embed_dim) embeddings: masked mean of the last hidden states, projected."""

    def __init__(self, config: TextEncoderConfig, tokenizer: PreTrainedTokenizerBase, embed_dim: int):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        if config.pretrained:
            try:
                self.bert = BertModel.from_pretrained(config.pretrained, local_files_only=True)
            except (OSError, ValueError) as error:
                raise CheckpointError(f"{config.pretrained}: not a local Hugging Face BERT folder: {error}") from None
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
