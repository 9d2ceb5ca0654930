"""The text VAE in the Optimus shape (Li et al., 2020), as the paper's text diffuser expects.

A BERT-style encoder maps a report to a Gaussian posterior over a ``latent_dim``
vector (768 in the paper); a GPT-2-style decoder reconstructs the report from it.
The latent reaches the decoder as a prefix token ("memory", one of Optimus' two
injection routes). Optimus also adds it to every token embedding; in a small
decoder trained from scratch that sum lets the per-report latent swamp the token
identities (Adam grows the projection faster than the embeddings) and the
decoder learns only word frequencies, so medm2g uses the memory route alone.
Both halves are built from configs with transformers; nothing is downloaded.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

INITIAL_POSTERIOR_LOGVAR = -5.0


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
        # start with a narrow posterior (std ~0.08): at std 1 the sampled latent of a fresh encoder
        # is mostly noise, the decoder learns to ignore it, and it never recovers (posterior collapse)
        nn.init.constant_(self.to_posterior.bias[config.latent_dim:], INITIAL_POSTERIOR_LOGVAR)
        self.decoder = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab, n_positions=config.max_length + 1, n_embd=config.hidden_size,
                n_layer=config.layers, n_head=config.heads, bos_token_id=tokenizer.cls_token_id,
                eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
            )
        )
        self.latent_to_memory = nn.Linear(config.latent_dim, config.hidden_size)
        # bag-of-words head (Zhao et al., 2017): predicting the report's words from z alone forces
        # the latent to carry the content, the standard cure for posterior collapse
        self.bag_of_words = nn.Linear(config.latent_dim, vocab)
        # latents are divided by this before decoding and multiplied after encoding, so the
        # diffuser sees unit-variance latents; calibrated from data after VAE training
        self.register_buffer("latent_scale", torch.ones(()))

    @property
    def scaling_factor(self) -> float:
        return float(self.latent_scale)

    def set_scaling_factor(self, value: float) -> None:
        self.latent_scale.fill_(float(value))

    def training_loss(self, texts: list[str], generator: torch.Generator | None = None,
                      kl_weight: float = 1e-3, word_dropout: float = 0.3) -> tuple[torch.Tensor, dict[str, float]]:
        """Token cross-entropy given a posterior sample, plus ``kl_weight`` times the KL to N(0, 1)
        summed over latent dimensions (Optimus trains with a small KL weight).

        ``word_dropout`` masks that fraction of the decoder's teacher-forced input tokens
        (Bowman et al., 2016): a small decoder trained from scratch otherwise learns the
        reports' language model and ignores the latent (posterior collapse), and
        generated latents would then all decode to the same report.
        """
        mean, logvar = self.posterior(texts)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        latents = (mean + (0.5 * logvar).exp() * noise)[:, :, None, None]
        reconstruction = self.reconstruction_loss(texts, latents * self.latent_scale, word_dropout, generator)
        bag = self._bag_of_words_loss(texts, latents)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
        loss = reconstruction + bag + kl_weight * kl
        return loss, {"token_ce": float(reconstruction.detach()), "bag_of_words": float(bag.detach()),
                      "kl": float(kl.detach())}

    def _bag_of_words_loss(self, texts: list[str], latents: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of each report's (non-special) tokens under a softmax of z alone."""
        ids = self._tokenize(texts)["input_ids"]
        special = torch.tensor(self.tokenizer.all_special_ids, device=ids.device)
        words = ~torch.isin(ids, special)
        log_probs = F.log_softmax(self.bag_of_words(latents.flatten(1)), dim=-1)
        picked = log_probs.gather(1, ids) * words
        return -(picked.sum(1) / words.sum(1).clamp(min=1)).mean()

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        device = self.to_posterior.weight.device
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        ).to(device)

    def posterior(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance (B, latent_dim) of q(z | text), from the masked mean of the
        encoder's token states. (Optimus reads the [CLS] state of a pretrained BERT; in a fresh
        encoder [CLS] barely differs between reports, about 0.04 % of its norm, so every report
        starts at the same latent and the decoder learns to ignore it.)"""
        tokens = self._tokenize(texts)
        hidden = self.encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        mean, logvar = self.to_posterior(pooled).chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

    def sample_latents(self, mean: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """A scaled latent (B, latent_dim, 1, 1) drawn from the posterior ``(mean, logvar)``."""
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        return ((mean + (0.5 * logvar).exp() * noise) * self.latent_scale)[:, :, None, None]

    def encode(self, texts: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample_latents(*self.posterior(texts), generator=generator)

    def _memory(self, latents: torch.Tensor) -> torch.Tensor:
        """The latent as one prefix token (B, 1, hidden)."""
        return self.latent_to_memory(latents.flatten(1) / self.latent_scale)[:, None]

    def reconstruction_loss(self, texts: list[str], latents: torch.Tensor, word_dropout: float = 0.0,
                            generator: torch.Generator | None = None) -> torch.Tensor:
        """Teacher-forced token cross-entropy of the texts given their latents (B, latent_dim, 1, 1)."""
        ids = self._tokenize(texts)["input_ids"]
        inputs = ids[:, :-1]
        if word_dropout > 0:
            drop = torch.rand(inputs.shape, generator=generator).to(inputs.device) < word_dropout
            keep = (inputs == self.tokenizer.cls_token_id) | (inputs == self.tokenizer.pad_token_id)
            inputs = inputs.masked_fill(drop & ~keep, self.tokenizer.mask_token_id)
        inputs = torch.cat([self._memory(latents), self.decoder.transformer.wte(inputs)], dim=1)
        logits = self.decoder(inputs_embeds=inputs).logits
        labels = ids.masked_fill(ids == self.tokenizer.pad_token_id, -100)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, max_length: int | None = None) -> list[str]:
        """Greedy decoding until [SEP] (or ``max_length`` tokens) for every latent."""
        max_length = min(max_length or self.config.max_length, self.config.max_length)
        batch = latents.shape[0]
        device = latents.device
        token = torch.full((batch, 1), self.tokenizer.cls_token_id, device=device)
        step_input = torch.cat([self._memory(latents), self.decoder.transformer.wte(token)], dim=1)
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
            step_input = self.decoder.transformer.wte(token)
        ids = torch.cat(generated, dim=1) if generated else token[:, :0]
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
