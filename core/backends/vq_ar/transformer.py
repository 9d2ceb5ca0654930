"""The synthesis step: a GPT-2-style transformer predicts an image's codebook indices one by one
from the prompt, an instruction and the key patches (the seed paper's step 3, with a small
transformer built from config where the paper fine-tunes a large language model).

One token space holds the prompt's words, the grid's positions and the codebook's entries. A
sequence is ``<bos> prompt <sep> instruction <sep> key patches <image> image tokens``: each key
patch is two tokens, where it lies and which code it is, so the alignment's "haemorrhage lands
here" reaches the transformer as a place and a look. The conditioning part has a fixed length
(pads masked out), so every image token sits at the same position in every sequence. Only the
image tokens are predicted, over the codebook's entries alone.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from medm2g.core.backends.vq_ar.tokens import BOS, IMAGE, PAD, SEP
from medm2g.core.config.vq_ar import VQArConfig
from medm2g.core.models.kv_cache import step_with_cache

PROMPT_LENGTH = 24
"""Prompt words kept (the phantom's prompts have up to 12; longer ones are cut)."""
MAX_TERMS = 4
"""Terms whose key patches are given (each ``key_patches`` pairs of position and code)."""


class TokenTransformer(nn.Module):
    def __init__(self, words: int, grid: int, codebook_size: int, instruction: Sequence[int], config: VQArConfig):
        super().__init__()
        self.words, self.positions, self.codes = words, grid * grid, codebook_size
        self.instruction = list(instruction)
        self.key_tokens = 2 * MAX_TERMS * config.key_patches
        self.condition_length = 1 + PROMPT_LENGTH + 1 + len(self.instruction) + 1 + self.key_tokens + 1
        self.model = GPT2LMHeadModel(GPT2Config(
            vocab_size=words + self.positions + codebook_size, n_positions=self.condition_length + self.positions,
            n_embd=config.transformer_width, n_layer=config.transformer_layers, n_head=config.transformer_heads,
            bos_token_id=BOS, eos_token_id=IMAGE, pad_token_id=PAD, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))

    def condition(self, prompt: Sequence[int], keys: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
        """(tokens, attention mask) of one conditioning part: ``prompt`` word ids, ``keys`` (position, code) pairs."""
        prompt = list(prompt)[:PROMPT_LENGTH]
        pairs = [token for position, code in keys for token in (self.words + position,
                                                                self.words + self.positions + code)]
        pairs = pairs[:self.key_tokens]
        tokens = ([BOS] + prompt + [PAD] * (PROMPT_LENGTH - len(prompt)) + [SEP] + self.instruction + [SEP]
                  + pairs + [PAD] * (self.key_tokens - len(pairs)) + [IMAGE])
        mask = ([1] * (1 + len(prompt)) + [0] * (PROMPT_LENGTH - len(prompt)) + [1] * (len(self.instruction) + 2)
                + [1] * len(pairs) + [0] * (self.key_tokens - len(pairs)) + [1])
        return tokens, mask

    def loss(self, conditions: torch.Tensor, masks: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the (B, h*w) image indices given (B, condition_length) conditions."""
        offset = self.words + self.positions
        tokens = torch.cat([conditions, images + offset], 1)
        attention = torch.cat([masks, torch.ones_like(images)], 1)
        logits = self.model(input_ids=tokens, attention_mask=attention).logits
        predicting = logits[:, self.condition_length - 1:-1, offset:]
        return F.cross_entropy(predicting.flatten(0, 1).float(), images.flatten())

    @torch.no_grad()
    def sample(self, conditions: torch.Tensor, masks: torch.Tensor, generators: Sequence[torch.Generator],
               top_k: int, temperature: float) -> torch.Tensor:
        """(B, h*w) image indices, row i drawn with ``generators[i]`` alone (top-k, temperature)."""
        offset = self.words + self.positions
        output, cache = step_with_cache(self.model, None, input_ids=conditions, attention_mask=masks)
        attention, drawn = masks, []
        for index in range(self.positions):
            logits = output.logits[:, -1, offset:].float() / temperature
            threshold = logits.topk(min(top_k, self.codes), dim=-1).values[:, -1:]
            probabilities = logits.masked_fill(logits < threshold, float("-inf")).softmax(-1).cpu()
            token = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probabilities, generators)])
            drawn.append(token[:, 0])
            if index + 1 == self.positions:
                break
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)
            output, cache = step_with_cache(self.model, cache, input_ids=(token + offset).to(conditions.device),
                                            attention_mask=attention)
        return torch.stack(drawn, 1)
