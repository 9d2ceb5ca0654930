"""The three trained parts of a ``vq-ar`` edge in one module, saved and loaded as one safetensors file.

``VQAutoregressive`` keeps what generation needs together: the prompt tokenizer's word list (in
the file's metadata, so ids cannot drift from the vocabulary file), the codebook, the word-patch
alignment and the transformer; :meth:`prompt_condition` is the one way a report becomes the
transformer's conditioning tokens, in training and in generation alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import attrs
import torch
from torch import nn

from medm2g.core.backends.vq_ar.alignment import WordPatchAlignment, key_patches
from medm2g.core.backends.vq_ar.codebook import VisualCodebook
from medm2g.core.backends.vq_ar.tokens import PromptTokens, prompt_terms, term_span, words_of
from medm2g.core.backends.vq_ar.transformer import MAX_TERMS, PROMPT_LENGTH, TokenTransformer
from medm2g.core.config.vq_ar import VQArConfig
from medm2g.core.data.midline import mirror_images
from medm2g.core.errors import CheckpointError
from medm2g.core.io.checkpoints import load_module, read_metadata, save_module
from medm2g.core.prompting.for_run import RunPrompts
from medm2g.core.prompting.prompts import Prompt


@attrs.frozen
class PromptCondition:
    """A report as the transformer reads it: the prompt, its word ids, its terms' spans and key patches."""

    prompt: Prompt
    ids: tuple[int, ...]
    terms: dict  # term -> (start, end) in ids
    keys: tuple[tuple[int, int], ...]  # (position, code) pairs, MAX_TERMS terms' worth at most


class VQAutoregressive(nn.Module):
    def __init__(self, text: str, image: str, channels: int, size: int, tokens: PromptTokens, config: VQArConfig):
        super().__init__()
        self.text, self.image, self.tokens, self.config = text, image, tokens, config
        self.codebook = VisualCodebook(channels, size, config)
        grid = self.codebook.grid
        self.alignment = WordPatchAlignment(tokens.size, config.code_dim, grid, config.alignment_dim,
                                            tokens.content_ids(), *tokens.ids("no ;"),
                                            saliency=config.alignment_saliency)
        self.transformer = TokenTransformer(tokens.size, grid, config.codebook_size,
                                            tokens.ids(config.instruction), config)

    @torch.no_grad()
    def prompt_conditions(self, reports: Sequence[str], prompts: RunPrompts) -> list[PromptCondition]:
        """Each report's prompt (by the run's writer), and the key patches of its terms from the alignment."""
        every = self.alignment.every_patch(self.codebook.codes)  # once for all the reports' terms
        return [self._prompt_condition(report, prompts, every) for report in reports]

    def prompt_condition(self, report: str, prompts: RunPrompts) -> PromptCondition:
        return self.prompt_conditions([report], prompts)[0]

    def _prompt_condition(self, report: str, prompts: RunPrompts, every: torch.Tensor) -> PromptCondition:
        prompt = prompts.prompt(report)
        ids = self.tokens.ids(prompt.text)[:PROMPT_LENGTH]
        words = words_of(prompt.text)[:PROMPT_LENGTH]
        spans = {term: span for term in prompt_terms(prompt) if (span := term_span(words, term)) is not None}
        device = self.alignment.positions.device
        tokens = torch.tensor([ids or [0]], device=device)
        vectors = self.alignment.word_vectors(tokens, torch.ones_like(tokens, dtype=torch.bool))[0]
        keys = []
        for term, span in list(spans.items())[:MAX_TERMS]:
            keys += key_patches(self.alignment, self.alignment.term_vector(vectors, span), self.codebook.codes,
                                self.config.key_patches, every)
        return PromptCondition(prompt, tuple(ids), spans, tuple(keys))

    @torch.no_grad()
    def patch_codes(self, images: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, grid, grid) codebook indices of (N, C, H, W) images and of the images mirrored about
        their midlines, on the model's device: what the alignment compares each patch with."""
        device = self.alignment.positions.device
        codes, mirrored = [], []
        for start in range(0, len(images), batch):
            part = images[start:start + batch].float()
            codes.append(self.codebook.encode(part.to(device)))
            mirrored.append(self.codebook.encode(mirror_images(part).to(device)))
        return torch.cat(codes), torch.cat(mirrored)

    def conditioning(self, conditions: list[PromptCondition], device) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.transformer.condition(c.ids, c.keys) for c in conditions]
        return (torch.tensor([r[0] for r in rows], device=device), torch.tensor([r[1] for r in rows], device=device))


def save_vq_ar(path: Path, model: VQAutoregressive, source: str) -> Path:
    return save_module(path, model, {"backend": "vq-ar", "text": model.text, "image": model.image, "source": source,
                                     "words": json.dumps(list(model.tokens.words)),
                                     "content": json.dumps(sorted(model.tokens.content))})


def load_vq_ar(path: Path, channels: int, size: int, config: VQArConfig) -> VQAutoregressive:
    """A trained ``vq-ar`` model, its tokenizer from the file itself, in eval mode."""
    metadata = read_metadata(path)
    if metadata.get("backend") != "vq-ar":
        raise CheckpointError(f"{path}: not a vq-ar model (its metadata says backend {metadata.get('backend')!r})")
    tokens = PromptTokens(tuple(json.loads(metadata["words"])), frozenset(json.loads(metadata["content"])))
    model = VQAutoregressive(metadata["text"], metadata["image"], channels, size, tokens, config)
    return load_module(path, model).eval().requires_grad_(False)
