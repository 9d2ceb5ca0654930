"""An offline WordPiece tokenizer built from a vocabulary file the text plugin ships.

Nothing is downloaded. The default vocabulary (``plugins/text/vocabulary.txt``, 1,000 entries)
is built by one rule, so real reports tokenize into words and not only the phantom's:

1. the special tokens, then every letter, digit and punctuation mark as a word and as a
   continuation (``##x``), so any report tokenizes and nothing becomes ``[UNK]``;
2. common English and medical suffixes as continuations (``##s``, ``##ed``, ``##ing``, ``##osis``,
   ``##ectomy`` ...), so an inflected word is its stem and a suffix, not a spelling;
3. whole words: the phantom cohort's report terms, then a radiology word list written for medm2g
   (neuro, chest and abdominal anatomy, pathology, descriptors, report phrasing; British and
   American spellings: haemorrhage and hemorrhage, oedema and edema). Hyphenated terms enter as
   their parts, because the pre-tokenizer splits at hyphens ("left-sided" is left, -, sided).

WordPiece takes the longest known piece first: a listed word stays whole ("bleed", "hematoma",
"hemisphere", "neoplasm"), others fall back to suffixes and characters. A user's own Hugging Face
tokenizer folder can replace it; a run is tied to the vocabulary it was trained with (the text
encoder's and decoder's embedding rows).
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
