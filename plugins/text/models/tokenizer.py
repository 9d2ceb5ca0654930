"""An offline WordPiece tokenizer built from a vocabulary file the text plugin ships.

Nothing is downloaded: the default vocabulary is a radiology word list plus every
character as a word piece, so any report tokenizes (unknown words fall back to
characters). A user's own Hugging Face tokenizer folder can replace it.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from medm2g.core.errors import CheckpointError


def load_tokenizer(vocabulary_or_folder: Path | str) -> PreTrainedTokenizerBase:
    """A ``vocab.txt``-style file builds a lowercasing WordPiece tokenizer; a folder is
    loaded with ``AutoTokenizer`` from local files only."""
    path = Path(vocabulary_or_folder)
    if path.is_dir():
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{path}: not a tokenizer folder: {error}") from error
    if not path.is_file():
        raise CheckpointError(f"{path}: tokenizer vocabulary not found")
    return wordpiece_tokenizer(path)


SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]"}


def wordpiece_tokenizer(vocabulary: Path) -> PreTrainedTokenizerFast:
    """A BERT-style (lowercasing, [CLS] ... [SEP]) WordPiece tokenizer over a one-token-per-line file.

    Built from the ``tokenizers`` parts rather than ``BertTokenizerFast(vocab_file=...)``:
    transformers 5 silently ignores ``vocab_file`` there and returns a five-token
    vocabulary that maps every word to [UNK].
    """
    tokens = [line.rstrip("\n") for line in vocabulary.read_text(encoding="utf-8").splitlines() if line.strip()]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    missing = [token for token in SPECIAL_TOKENS.values() if token not in vocab]
    if missing:
        raise CheckpointError(f"{vocabulary}: vocabulary lacks the special tokens {', '.join(missing)}")
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)
