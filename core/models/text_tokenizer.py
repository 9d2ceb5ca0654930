"""An offline WordPiece tokenizer built from a vocabulary file the text plugin ships.

Nothing is downloaded: the default vocabulary is a radiology word list plus every
character as a word piece, so any report tokenizes (unknown words fall back to
characters). A user's own Hugging Face tokenizer folder can replace it.
"""

from __future__ import annotations

from pathlib import Path

from transformers import BertTokenizerFast, PreTrainedTokenizerBase

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
    return BertTokenizerFast(vocab_file=str(path), do_lower_case=True)
