"""Fine-grained alignment of prompt words with codebook patches (the seed paper's step 2).

A word's vector comes from its token through one self-attention layer over the prompt, so
"haemorrhage" in "haemorrhage in the left frontal lobe" knows its side. A patch's vector comes from
its codebook entry, a learned embedding of its position, and its *asymmetry*: the difference
between its entry and the entry at the same place of the head mirrored about its midline. A focal
finding is one-sided, so that difference is what tells a lesion from a head's outline, which
differs between heads but is symmetric within each (without it the alignment learned to tell
images apart by their skull's edge). The word-patch similarity matrix is trained contrastively on
paired data (FILIP-style): a prompt's score with an image is the mean over its stated content words
(not those of a "no ..." clause) of their best patch, and the symmetric InfoNCE of those scores
over a batch (eq. 3 of MedM2G, per word instead of per sample) pulls each prompt to its own image.

Two things keep the match on the lesion rather than on its mirror place, which is just as
asymmetric and just as telling of the report:

* a fixed **saliency prior** joins each patch's similarity before the best patch is taken: how far
  the patch departs from both its mirror place and the cohort's typical entry there (z-scored
  within the image), the reader's own cue. The lesion departs from both; its mirror place is
  typical, an outline is symmetric.
* a share of training images see the cohort's **typical entries** as their mirror, the view key
  patches are chosen in (they have no image, so no mirror either).

Because a patch is then a (code, position) pair, the similarities of a term with every pair are
known without an image: the prompt's *key patches* are the top pairs of each term, the tokens the
transformer reads beside the prompt; over one image's grid they are its heat map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medm2g.core.models.losses import LearnableTemperature


class WordPatchAlignment(nn.Module):
    def __init__(self, vocabulary_size: int, code_dim: int, grid: int, dim: int, content_ids: set[int],
                 negation_id: int = -1, separator_id: int = -1, saliency: float = 0.05):
        super().__init__()
        self.grid, self.negation_id, self.separator_id, self.saliency = grid, negation_id, separator_id, saliency
        self.words = nn.Embedding(vocabulary_size, dim)
        self.context = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim, dropout=0.0,
                                                  batch_first=True, norm_first=True)
        self.code_in = nn.Linear(code_dim, dim)
        self.asymmetry_in = nn.Linear(code_dim, dim)
        self.positions = nn.Parameter(torch.randn(grid * grid, dim) * 0.02)
        self.patch_out = nn.Sequential(nn.GELU(), nn.Linear(dim, dim))
        self.temperature = LearnableTemperature(0.1)
        self.register_buffer("typical", torch.zeros(grid * grid, code_dim))
        """The training images' mean codebook vector at each place of their mirrored grid: the mirror
        a key patch (chosen with no image) is compared with, and the saliency prior's norm."""
        content = torch.zeros(vocabulary_size, dtype=torch.bool)
        content[sorted(content_ids)] = True
        self.register_buffer("content", content, persistent=False)

    @torch.no_grad()
    def learn_typical(self, mirrored: torch.Tensor) -> None:
        """Set :attr:`typical` from the (N, code_dim, h, w) codebook vectors of the training images' mirrors."""
        self.typical.copy_(mirrored.float().mean(0).flatten(1).T)

    def word_vectors(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids with (B, L) real-token mask -> (B, L, dim) unit vectors."""
        hidden = self.context(self.words(tokens), src_key_padding_mask=~mask)
        return F.normalize(hidden, dim=-1)

    def patch_vectors(self, codes: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
        """(B, code_dim, h, w) codebook vectors of images and of their mirrors -> (B, h*w, dim) unit vectors."""
        flat, opposite = codes.flatten(2).transpose(1, 2), mirrored.flatten(2).transpose(1, 2)
        return F.normalize(self.patch_out(self.code_in(flat) + self.asymmetry_in(flat - opposite) + self.positions),
                           dim=-1)

    def patch_saliency(self, codes: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
        """(B, h*w): each patch's distance from the nearer of its mirror place and the typical entry,
        z-scored within its image (weighted by ``saliency`` when matched)."""
        flat, opposite = codes.flatten(2).transpose(1, 2), mirrored.flatten(2).transpose(1, 2)
        distance = torch.minimum((flat - opposite).norm(dim=-1), (flat - self.typical).norm(dim=-1))
        return (distance - distance.mean(1, keepdim=True)) / distance.std(1, keepdim=True).clamp(min=1e-6)

    def every_patch(self, codebook: torch.Tensor) -> torch.Tensor:
        """(K, code_dim) codebook -> (K, h*w, dim): every code at every position, its mirror the
        typical entry there, the patches an image could have, for key patches chosen before there is an image."""
        return F.normalize(self.patch_out(self.code_in(codebook)[:, None]
                                          + self.asymmetry_in(codebook[:, None] - self.typical[None])
                                          + self.positions[None]), dim=-1)

    def matches(self, words: torch.Tensor, patches: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
        """(B_text, L, dim) words, (B_image, P, dim) patches, (B_image, P) saliency -> (B_text, B_image, L, P)."""
        return torch.einsum("ild,jpd->ijlp", words, patches) + self.saliency * saliency[None, :, None]

    def scores(self, words: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor, patches: torch.Tensor,
               saliency: torch.Tensor) -> torch.Tensor:
        """(B_text, B_image): each prompt's mean, over its content words, of their best patch in each image."""
        weights = (mask & self.content[tokens] & ~self.negated(tokens)).float()
        best = self.matches(words, patches, saliency).amax(-1)  # (B_text, B_image, L)
        return (best * weights[:, None]).sum(-1) / weights.sum(-1).clamp(min=1)[:, None]

    def negated(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: the words of a clause (between ``;``) holding ``no``: "no midline shift" is in
        most prompts and shows nowhere, so its words would only add noise to a prompt's score."""
        clause = torch.cumsum(tokens == self.separator_id, dim=1)
        holds = torch.zeros(tokens.shape[0], tokens.shape[1] + 1, device=tokens.device).scatter_reduce(
            1, clause, (tokens == self.negation_id).float(), reduce="amax")
        return holds.gather(1, clause) > 0

    def loss(self, tokens: torch.Tensor, mask: torch.Tensor, codes: torch.Tensor, mirrored: torch.Tensor,
             typical_mirror: torch.Tensor | None = None) -> torch.Tensor:
        """Symmetric InfoNCE of the fine-grained scores of a batch of paired prompts and images;
        ``typical_mirror`` (B,) bool: the images whose asymmetry is taken against the typical entries."""
        if typical_mirror is not None:
            typical = self.typical.T.reshape(1, *mirrored.shape[1:]).expand_as(mirrored)
            mirrored = torch.where(typical_mirror[:, None, None, None], typical, mirrored)
        scores = self.scores(self.word_vectors(tokens, mask), mask, tokens, self.patch_vectors(codes, mirrored),
                             self.patch_saliency(codes, mirrored))
        logits = scores / self.temperature()
        targets = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2

    def term_vector(self, words: torch.Tensor, span: tuple[int, int]) -> torch.Tensor:
        """One prompt's (L, dim) word vectors -> the unit vector of the term at ``span``."""
        return F.normalize(words[span[0]:span[1]].mean(0), dim=-1)


def heat_map(alignment: WordPatchAlignment, term: torch.Tensor, codes: torch.Tensor,
             mirrored: torch.Tensor) -> torch.Tensor:
    """(grid, grid) match of a term's vector with each patch of one image's (code_dim, h, w) codes
    (``mirrored``: its mirror's): the similarity and the saliency prior, what the best patch is taken of."""
    patches = alignment.patch_vectors(codes[None], mirrored[None])[0]
    saliency = alignment.patch_saliency(codes[None], mirrored[None])[0]
    return (patches @ term + alignment.saliency * saliency).view(alignment.grid, alignment.grid)


def key_patches(alignment: WordPatchAlignment, term: torch.Tensor, codebook: torch.Tensor, count: int,
                every: torch.Tensor | None = None) -> list[tuple[int, int]]:
    """The ``count`` (position, code) pairs most similar to a term's vector, best first; ``every``:
    ``alignment.every_patch(codebook)`` when the caller has it already (it costs a pass over every
    code at every position, the same for every term of every prompt)."""
    similarities = (alignment.every_patch(codebook) if every is None else every) @ term  # (K, P)
    best = similarities.flatten().topk(count).indices
    positions = similarities.shape[1]
    return [(int(i) % positions, int(i) // positions) for i in best]
