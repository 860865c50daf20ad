"""Byte-level BPE tokenizer: training, special tokens and the chat template.

The tokenizer is trained with Hugging Face `tokenizers` and saved as a
`PreTrainedTokenizerFast` directory (tokenizer.json + tokenizer_config.json), so the
exported model loads with `AutoTokenizer.from_pretrained` in any HF-compatible tool.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from lmforge.platform import chat

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (GPT-2 style pre-tokenization) on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=chat.SPECIAL_TOKENS,
        # every byte gets a token, so no input is ever out of vocabulary
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_nonempty(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=chat.EOS,
        bos_token=chat.EOS,
        pad_token=chat.PAD,
        unk_token=None,
        model_max_length=1_000_000,
    )
    fast.chat_template = chat.CHAT_TEMPLATE
    return fast


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
    for t in texts:
        if t:
            yield t


def save_tokenizer(tok: PreTrainedTokenizerFast, uri: str) -> None:
    """`save_pretrained` to a local folder or an object-store URI."""
    import tempfile

    import pyarrow.fs as pafs

    from lmforge.platform import storage

    if not storage.is_remote(uri):
        tok.save_pretrained(uri)
        return
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        fs, path = storage.filesystem(uri)
        pafs.copy_files(d, path, destination_filesystem=fs)
