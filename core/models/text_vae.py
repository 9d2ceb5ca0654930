"""The text VAE in the Optimus shape (Li et al., 2020), as the paper's text diffuser expects.

A BERT-style encoder maps a report to a Gaussian posterior over a ``latent_dim``
vector (768 in the paper); a GPT-2-style decoder reconstructs the report from it.
The latent reaches the decoder both as a prefix token ("memory") and added to
every token embedding ("embedding" injection), Optimus' two injection routes.
Both halves are built from configs with transformers; nothing is downloaded.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase


@attrs.frozen
class TextVAEConfig:
    latent_dim: int
    hidden_size: int
    layers: int
    heads: int
    max_length: int = 64


class TextVAE(nn.Module):
    """``encode(texts) -> (B, latent_dim, 1, 1)`` and ``decode(latents) -> list[str]`` (greedy)."""

    def __init__(self, config: TextVAEConfig, tokenizer: PreTrainedTokenizerBase):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        vocab = len(tokenizer)
        self.encoder = BertModel(
            BertConfig(
                vocab_size=vocab, hidden_size=config.hidden_size, num_hidden_layers=config.layers,
                num_attention_heads=config.heads, intermediate_size=4 * config.hidden_size,
                max_position_embeddings=config.max_length, pad_token_id=tokenizer.pad_token_id,
            ),
            add_pooling_layer=False,
        )
        self.to_posterior = nn.Linear(config.hidden_size, 2 * config.latent_dim)
        self.decoder = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab, n_positions=config.max_length + 1, n_embd=config.hidden_size,
                n_layer=config.layers, n_head=config.heads, bos_token_id=tokenizer.cls_token_id,
                eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
            )
        )
        self.latent_to_memory = nn.Linear(config.latent_dim, config.hidden_size)

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        device = self.to_posterior.weight.device
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        ).to(device)

    def posterior(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance (B, latent_dim) of q(z | text), read off the [CLS] state."""
        tokens = self._tokenize(texts)
        hidden = self.encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        mean, logvar = self.to_posterior(hidden[:, 0]).chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, texts: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
        mean, logvar = self.posterior(texts)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return (mean + (0.5 * logvar).exp() * noise)[:, :, None, None]

    def _embed(self, latents: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        memory = self.latent_to_memory(latents.flatten(1))[:, None]
        return self.decoder.transformer.wte(token_ids) + memory

    def reconstruction_loss(self, texts: list[str], latents: torch.Tensor) -> torch.Tensor:
        """Teacher-forced token cross-entropy of the texts given their latents (B, latent_dim, 1, 1)."""
        ids = self._tokenize(texts)["input_ids"]
        memory = self.latent_to_memory(latents.flatten(1))[:, None]
        inputs = torch.cat([memory, self._embed(latents, ids[:, :-1])], dim=1)
        logits = self.decoder(inputs_embeds=inputs).logits
        labels = ids.masked_fill(ids == self.tokenizer.pad_token_id, -100)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, max_length: int | None = None) -> list[str]:
        """Greedy decoding until [SEP] (or ``max_length`` tokens) for every latent."""
        max_length = min(max_length or self.config.max_length, self.config.max_length)
        batch = latents.shape[0]
        device = latents.device
        memory = self.latent_to_memory(latents.flatten(1))[:, None]
        token = torch.full((batch, 1), self.tokenizer.cls_token_id, device=device)
        step_input = torch.cat([memory, self._embed(latents, token)], dim=1)
        generated, past, finished = [], None, torch.zeros(batch, dtype=torch.bool, device=device)
        for _ in range(max_length - 1):
            out = self.decoder(inputs_embeds=step_input, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            token = token.masked_fill(finished[:, None], self.tokenizer.pad_token_id)
            generated.append(token)
            finished |= token.squeeze(1) == self.tokenizer.sep_token_id
            if finished.all():
                break
            step_input = self._embed(latents, token)
        ids = torch.cat(generated, dim=1) if generated else token[:, :0]
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
