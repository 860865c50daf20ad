"""Byte-level BPE tokenizer: training, special tokens and the chat template.

The tokenizer is trained with Hugging Face `tokenizers` and saved as a
`PreTrainedTokenizerFast` directory (tokenizer.json + tokenizer_config.json), so the
exported model loads with `AutoTokenizer.from_pretrained` in any HF-compatible tool.
With a data mixture it is trained on a seeded sample whose characters follow the
mixture's weights (`tokenizer_sample`), so a small source still gets its tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from lmforge.pipelines.mixture import SOURCE, sample_key, small_table
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


def tokenizer_rates(
    stats: dict[str, tuple[int, int]], weights: dict[str, float], n_docs: int
) -> dict[str, float]:
    """Per source, the share of its documents sampled to train the tokenizer so that
    the sample's characters follow `weights` with about `n_docs` documents in all.
    `stats`: source -> (documents, characters)."""
    # documents of s wanted ∝ w_s / (mean characters of s)
    want = {s: weights[s] * docs / max(chars, 1) for s, (docs, chars) in stats.items() if docs}
    scale = n_docs / max(sum(want.values()), 1e-12)
    return {s: min(1.0, want[s] * scale / stats[s][0]) for s in want}


def tokenizer_sample(docs: Any, weights: dict[str, float], n_docs: int, seed: int) -> Any:
    """A seeded sample of about `n_docs` documents whose characters follow `weights`."""
    lengths = small_table(docs.map_batches(_chars, batch_format="pyarrow"), [SOURCE, "chars"])
    sources = lengths[SOURCE].to_numpy(zero_copy_only=False)
    chars = lengths["chars"].to_numpy()
    stats = {s: (int((sources == s).sum()), int(chars[sources == s].sum())) for s in weights}
    rates = tokenizer_rates(stats, weights, n_docs)
    return docs.map_batches(_sampled, fn_args=(rates, seed), batch_format="pyarrow")


def _chars(batch: pa.Table) -> pa.Table:
    return pa.table({SOURCE: batch[SOURCE], "chars": pc.utf8_length(batch["text"])})


def _sampled(batch: pa.Table, rates: dict[str, float], seed: int) -> pa.Table:
    keep = [
        sample_key(seed, f"tokenizer:{s}", i) < rates.get(s, 0.0) * 2**64
        for s, i in zip(batch[SOURCE].to_pylist(), batch["id"].to_pylist(), strict=True)
    ]
    return batch.filter(pa.array(keep, pa.bool_()))
