"""A `pretrained:` BERT folder that holds no loadable safetensors weights is a one-line CheckpointError,
and a pickle in it is never unpickled (#19, item 5)."""

import os
import pickle

import pytest
from transformers import BertConfig

from medm2g.core.errors import CheckpointError
from medm2g.plugins.text.plugin import default_tokenizer


class _Payload:
    """Unpickling this would create the file ``marker``: the test sees whether a pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def bert_folder(tmp_path):
    folder = tmp_path / "radiology-bert"
    BertConfig(vocab_size=len(default_tokenizer()), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=48, max_position_embeddings=64).save_pretrained(folder)
    default_tokenizer().save_pretrained(folder)
    return folder


def test_a_pickle_pytorch_model_bin_is_refused_unread(installed, tmp_path):
    folder = bert_folder(tmp_path)
    marker = tmp_path / "the-pickle-ran"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match=r"holds pickle weights only \(pytorch_model.bin\).*never unpickles") as raised:
        installed["text"].prompt_encoder("tiny", 16, {"pretrained": str(folder)})
    assert "\n" not in str(raised.value)
    assert not marker.exists()


def test_a_corrupt_safetensors_file_is_a_one_line_error(installed, tmp_path):
    folder = bert_folder(tmp_path)
    (folder / "model.safetensors").write_bytes(b"not a safetensors header" * 4)
    with pytest.raises(CheckpointError, match="not a local Hugging Face BERT folder with safetensors weights: "
                                              "SafetensorError") as raised:
        installed["text"].prompt_encoder("tiny", 16, {"pretrained": str(folder)})
    assert "\n" not in str(raised.value)


def test_a_folder_without_weights_is_a_one_line_error(installed, tmp_path):
    folder = bert_folder(tmp_path)
    with pytest.raises(CheckpointError, match="not a local Hugging Face BERT folder") as raised:
        installed["text"].prompt_encoder("tiny", 16, {"pretrained": str(folder)})
    assert "\n" not in str(raised.value)
