"""The text VAE in the Optimus shape (Li et al., 2020), as the paper's text diffuser expects.

A BERT-style encoder maps a report to a Gaussian posterior over a ``latent_dim``
vector (768 in the paper); a GPT-2-style decoder reconstructs the report from it.
The latent reaches the decoder as a prefix token ("memory", one of Optimus' two
injection routes). Optimus also adds it to every token embedding; in a small
decoder trained from scratch that sum lets the per-report latent swamp the token
identities (Adam grows the projection faster than the embeddings) and the
decoder learns only word frequencies, so medm2g uses the memory route alone.
Both halves are built from configs with transformers, or loaded from local folders the user
names (a BERT encoder and a GPT-2 decoder, each with its own tokenizer, as Optimus pairs them:
:meth:`TextVAE.from_folders`); nothing is downloaded.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from medm2g.core.models.kv_cache import step_with_cache

INITIAL_POSTERIOR_LOGVAR = -5.0


@attrs.frozen
class TextVAEConfig:
    latent_dim: int
    hidden_size: int
    layers: int
    heads: int
    max_length: int = 64
    pretrained_encoder: str | None = None
    """A local BERT folder (weights and tokenizer) to start the encoder from, as Optimus does."""
    pretrained_decoder: str | None = None
    """A local GPT-2 folder (weights and tokenizer) to start the decoder from."""


@attrs.frozen
class DecoderTokens:
    """The decoder's start, stop, padding and word-dropout tokens: [CLS], [SEP], [PAD], [MASK] for a
    BERT-style vocabulary; GPT-2's has only <|endoftext|>, which then starts, stops and pads (padding
    is masked by position, never by id) and blanks dropped words."""

    start: int
    stop: int
    pad: int
    blank: int
    special: tuple[int, ...]

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> "DecoderTokens":
        def first(*names: str) -> int | None:
            return next((getattr(tokenizer, name) for name in names if getattr(tokenizer, name, None) is not None),
                        None)

        start, stop = first("cls_token_id", "bos_token_id"), first("sep_token_id", "eos_token_id")
        if start is None or stop is None:
            raise ValueError(f"the decoder's tokenizer has no start ([CLS]/BOS) or stop ([SEP]/EOS) token "
                             f"({type(tokenizer).__name__})")
        pad = first("pad_token_id") if first("pad_token_id") is not None else stop
        blank = first("mask_token_id", "unk_token_id")
        return cls(start, stop, pad, stop if blank is None else blank, tuple(tokenizer.all_special_ids))


class TextVAE(nn.Module):
    """``encode(texts) -> (B, latent_dim, 1, 1)`` and ``decode(latents) -> list[str]`` (greedy).
    ``tokenizer`` is the encoder's; ``decoder_tokenizer`` the decoder's (default: the same).
    ``encoder``/``decoder``: pretrained halves to use instead of fresh ones built from ``config``."""

    def __init__(self, config: TextVAEConfig, tokenizer: PreTrainedTokenizerBase,
                 decoder_tokenizer: PreTrainedTokenizerBase | None = None, encoder: BertModel | None = None,
                 decoder: GPT2LMHeadModel | None = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.decoder_tokenizer = decoder_tokenizer or tokenizer
        self.tokens = DecoderTokens.of(self.decoder_tokenizer)
        self.encoder = encoder or BertModel(
            BertConfig(
                vocab_size=len(tokenizer), hidden_size=config.hidden_size, num_hidden_layers=config.layers,
                num_attention_heads=config.heads, intermediate_size=4 * config.hidden_size,
                max_position_embeddings=config.max_length, pad_token_id=tokenizer.pad_token_id,
            ),
            add_pooling_layer=False,
        )
        self.to_posterior = nn.Linear(self.encoder.config.hidden_size, 2 * config.latent_dim)
        # start with a narrow posterior (std ~0.08): at std 1 the sampled latent of a fresh encoder
        # is mostly noise, the decoder learns to ignore it, and it never recovers (posterior collapse)
        nn.init.constant_(self.to_posterior.bias[config.latent_dim:], INITIAL_POSTERIOR_LOGVAR)
        self.decoder = decoder or GPT2LMHeadModel(
            GPT2Config(
                vocab_size=len(self.decoder_tokenizer), n_positions=config.max_length + 1, n_embd=config.hidden_size,
                n_layer=config.layers, n_head=config.heads, bos_token_id=self.tokens.start,
                eos_token_id=self.tokens.stop, pad_token_id=self.tokens.pad,
            )
        )
        self.latent_to_memory = nn.Linear(config.latent_dim, self.decoder.config.n_embd)
        # bag-of-words head (Zhao et al., 2017): predicting the report's words from z alone forces
        # the latent to carry the content, the standard cure for posterior collapse
        self.bag_of_words = nn.Linear(config.latent_dim, self.decoder.config.vocab_size)
        # latents are divided by this before decoding and multiplied after encoding, so the
        # diffuser sees unit-variance latents; calibrated from data after VAE training
        self.register_buffer("latent_scale", torch.ones(()))

    @classmethod
    def from_folders(cls, config: TextVAEConfig, default_tokenizer: PreTrainedTokenizerBase) -> "TextVAE":
        """The VAE with its encoder from ``config.pretrained_encoder`` (a BERT folder) and its decoder
        from ``config.pretrained_decoder`` (a GPT-2 folder), each with the tokenizer saved beside it;
        a half without a folder is built fresh, with ``default_tokenizer`` (the encoder's for the decoder)."""
        from medm2g.core.errors import CheckpointError
        from medm2g.plugins.text.models.encoder import load_local_model
        from medm2g.plugins.text.models.tokenizer import load_tokenizer

        encoder = decoder = decoder_tokenizer = None
        tokenizer = default_tokenizer
        if config.pretrained_encoder:
            encoder = load_local_model(config.pretrained_encoder, BertModel, "BERT")
            tokenizer = load_tokenizer(config.pretrained_encoder)
            if encoder.config.max_position_embeddings < config.max_length:
                raise CheckpointError(f"{config.pretrained_encoder}: reads {encoder.config.max_position_embeddings} "
                                      f"positions, the text VAE {config.max_length}")
        if config.pretrained_decoder:
            decoder = load_local_model(config.pretrained_decoder, GPT2LMHeadModel, "GPT-2")
            decoder_tokenizer = load_tokenizer(config.pretrained_decoder)
            if decoder.config.n_positions < config.max_length + 1:
                raise CheckpointError(f"{config.pretrained_decoder}: writes {decoder.config.n_positions} positions, "
                                      f"the text VAE needs {config.max_length + 1} (its latent and max_length tokens)")
        for half, model, words in (("encoder", encoder, tokenizer), ("decoder", decoder, decoder_tokenizer)):
            if model is not None and words is not None and model.get_input_embeddings().num_embeddings < len(words):
                folder = config.pretrained_encoder if half == "encoder" else config.pretrained_decoder
                raise CheckpointError(f"{folder}: {model.get_input_embeddings().num_embeddings} token embeddings for "
                                      f"a tokenizer of {len(words)}: the folder's tokenizer is not its model's")
        return cls(config, tokenizer, decoder_tokenizer, encoder, decoder)

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
        ids, real = self._decoder_ids(texts)
        special = torch.tensor(self.tokens.special, device=ids.device)
        words = real & ~torch.isin(ids, special)
        log_probs = F.log_softmax(self.bag_of_words(latents.flatten(1)), dim=-1)
        picked = log_probs.gather(1, ids) * words
        return -(picked.sum(1) / words.sum(1).clamp(min=1)).mean()

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The encoder's input ids and attention mask."""
        device = self.to_posterior.weight.device
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        ).to(device)

    def _decoder_ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) decoder ids, start + the report's tokens + stop, padded; and which positions are real."""
        content = self.decoder_tokenizer(list(texts), add_special_tokens=False, truncation=True,
                                         max_length=self.config.max_length - 2)["input_ids"]
        rows = [[self.tokens.start, *ids, self.tokens.stop] for ids in content]
        length = max(len(row) for row in rows)
        ids = torch.full((len(rows), length), self.tokens.pad, dtype=torch.long)
        real = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
            real[i, :len(row)] = True
        device = self.to_posterior.weight.device
        return ids.to(device), real.to(device)

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
        ids, real = self._decoder_ids(texts)
        inputs = ids[:, :-1]
        if word_dropout > 0:
            drop = torch.rand(inputs.shape, generator=generator).to(inputs.device) < word_dropout
            keep = ~real[:, :-1]
            keep[:, 0] = True  # the start token and the padding stay
            inputs = inputs.masked_fill(drop & ~keep, self.tokens.blank)
        inputs = torch.cat([self._memory(latents), self.decoder.transformer.wte(inputs)], dim=1)
        logits = self.decoder(inputs_embeds=inputs).logits
        labels = ids.masked_fill(~real, -100)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, max_length: int | None = None) -> list[str]:
        """Greedy decoding until [SEP] (or ``max_length`` tokens) for every latent."""
        max_length = min(max_length or self.config.max_length, self.config.max_length)
        batch = latents.shape[0]
        device = latents.device
        token = torch.full((batch, 1), self.tokens.start, device=device)
        step_input = torch.cat([self._memory(latents), self.decoder.transformer.wte(token)], dim=1)
        generated, past, finished = [], None, torch.zeros(batch, dtype=torch.bool, device=device)
        for _ in range(max_length - 1):
            out, past = step_with_cache(self.decoder, past, inputs_embeds=step_input)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            token = token.masked_fill(finished[:, None], self.tokens.pad)
            generated.append(token)
            finished |= token.squeeze(1) == self.tokens.stop
            if finished.all():
                break
            step_input = self.decoder.transformer.wte(token)
        ids = torch.cat(generated, dim=1) if generated else token[:, :0]
        return [text.strip() for text in self.decoder_tokenizer.batch_decode(ids, skip_special_tokens=True)]
