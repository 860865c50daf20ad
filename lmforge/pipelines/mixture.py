"""The data mixture: each source's share of training tokens, exact and reported.

A source is one input of `tokenize.input` or a named group of them (`tokenize.groups`).
With `tokenize.mixture` (a weight per source, normalized to sum 1) the stage
tokenizes every document once, splits train/val by document (`is_validation`, the
hash of the id), and then decides, for training documents only, how many times each
one is written: source `s` with `T_s` natural train tokens and target `w_s * T` is seen
`r_s = w_s * T / T_s` times, as `floor(r_s)` whole repeats plus a seeded sample of its
documents (by a per-document key, in key order) holding the closest number of tokens
to the fraction. Validation documents are written once, so a repeat never puts one
into training. Without a mixture every document is written once (the natural mix).

Tokens are counted per document with its end-of-text token, as packed. The id,
source, token count, split and sample key of every document are collected on the driver
(tens of bytes a document: fine for millions, not for billions, where a histogram of
keys weighted by tokens would replace it) to cut each source's sample at an exact token
count; the token ids stay in the object store.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmforge.pipelines.packing import (
    DOCS_PER_BATCH,
    LOSS_MASK,
    START,
    assistant_mask,
    is_validation,
    pack_batch,
    read_documents,
    stream_tail,
    with_eos,
)
from lmforge.platform import storage
from lmforge.platform.config import ConfigError

SOURCE = "input_source"  # the column naming each document's source


def source_labels(
    inputs: list[str], mixture: dict[str, float] | None, groups: dict[str, list[str]]
) -> dict[str, str]:
    """input URI (as written) -> its source's name; ConfigError naming the field when a
    mixture weight, a group or a member is wrong. Checked before Ray starts."""
    absolute = {storage.absolute(u): u for u in inputs}
    labels = {u: u for u in inputs}
    for name, members in groups.items():
        if name in absolute or storage.absolute(name) in absolute:
            raise ConfigError(f"tokenize.groups.{name}: a group may not be named as an input")
        for m in members:
            uri = absolute.get(storage.absolute(m))
            if uri is None:
                raise ConfigError(f"tokenize.groups.{name}: {m} is not in tokenize.input")
            if labels[uri] != uri:
                raise ConfigError(f"tokenize.groups.{name}: {m} is in group {labels[uri]} too")
            labels[uri] = name
    if mixture is None:
        return labels
    names = set(labels.values())
    for key, weight in mixture.items():
        if key not in names and absolute.get(storage.absolute(key)) not in names:
            raise ConfigError(
                f"tokenize.mixture.{key}: neither an input of tokenize.input nor a group "
                "of tokenize.groups"
            )
        if not (isinstance(weight, int | float) and math.isfinite(weight) and weight > 0):
            raise ConfigError(f"tokenize.mixture.{key}: weight must be > 0 (got {weight!r})")
    named = {labels.get(absolute.get(storage.absolute(k), k), k) for k in mixture}
    for name in labels.values():
        if name not in named:
            raise ConfigError(f"tokenize.mixture: no weight for source {name}")
    return labels


def source_weights(labels: dict[str, str], mixture: dict[str, float]) -> dict[str, float]:
    """Source name -> weight normalized to sum 1 (mixture keys may be input URIs)."""
    absolute = {storage.absolute(u): u for u in labels}
    raw = {labels.get(absolute.get(storage.absolute(k), k), k): w for k, w in mixture.items()}
    total = sum(raw.values())
    return {name: w / total for name, w in raw.items()}


def sample_key(seed: int, salt: str, doc_id: str) -> int:
    """A seeded 64-bit key per document: samples take documents in key order."""
    h = hashlib.blake2b(f"{seed}:{salt}:{doc_id}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


class TokenizeDocs:
    """Ray Data callable class: documents -> their token ids ending in EOS, token count,
    split and sample key, and with `chat_ids` (loss_on: assistant) the loss mask and the
    count of its targets. The tokenizer travels as its JSON text; each actor is one
    process on one core (its `tokenizers` thread pool has one thread)."""

    def __init__(
        self,
        tokenizer_json: str,
        eos_id: int,
        val_fraction: float,
        seed: int,
        chat_ids: dict[str, int] | None = None,
    ) -> None:
        import os

        # before the first encode: the Rust thread pool is built once per process
        os.environ.setdefault("RAYON_NUM_THREADS", "1")
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_str(tokenizer_json)
        self.encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        self.eos_id, self.val_fraction, self.seed = eos_id, val_fraction, seed
        self.chat_ids = chat_ids

    def __call__(self, batch: pa.Table) -> pa.Table:
        encoded = self.encode(batch["text"].to_pylist(), add_special_tokens=False)
        ids = with_eos(pa.array([e.ids for e in encoded], pa.list_(pa.int32())), self.eos_id)
        doc_ids = batch["id"].to_pylist()
        sources = batch[SOURCE].to_pylist()
        columns = {
            "id": batch["id"],
            SOURCE: batch[SOURCE],
            "input_ids": ids,
            "n_tokens": pc.list_value_length(ids).cast(pa.int64()),
            "val": pa.array([is_validation(i, self.val_fraction) for i in doc_ids]),
            "key": pa.array(
                [sample_key(self.seed, s, i) for s, i in zip(sources, doc_ids, strict=True)],
                pa.uint64(),
            ),
        }
        if self.chat_ids is not None:
            mask = assistant_mask(ids, self.chat_ids)
            columns[LOSS_MASK] = mask
            columns["n_loss"] = _row_sums(mask)
        return pa.table(columns)


def split_part(batch: pa.Table, validation: bool, plan: Plan | None) -> pa.Table:
    """The documents of one split of a `TokenizeDocs` batch, in the order packed."""
    part = batch.filter(pc.equal(batch["val"], validation))
    return part if plan is None else repeat_batch(part, plan)


Counts = dict[str, list[int]]  # source -> [tokens, loss targets] in packed rows


def pack_part(part: pa.Table, seq_len: int) -> tuple[Counts, pa.Table, pa.Table]:
    """Pack the documents of `part` (in order): the tokens and loss targets of each
    source in the rows, the rows, and the tail after the last whole row (`tail`), to be
    packed with other parts' tails."""
    return packed_by_source(part, seq_len), pack_batch(part, seq_len), tail(part, seq_len)


def tail(part: pa.Table, seq_len: int) -> pa.Table:
    """What packing `part` leaves after its last whole row, as documents a later
    `pack_part` takes: the pieces (`input_ids`, `n_tokens`), their source, `START`
    (False for the rest of a document a row cut) and their loss mask pieces."""
    mask = part[LOSS_MASK] if LOSS_MASK in part.column_names else None
    begins = part[START] if START in part.column_names else None
    pieces, mask_pieces, index, first = stream_tail(part["input_ids"], seq_len, mask, begins)
    columns: dict[str, Any] = {
        "input_ids": pieces,
        "n_tokens": pc.list_value_length(pieces).cast(pa.int64()),
        SOURCE: part[SOURCE].take(pa.array(index, pa.int64())),
        START: pa.array(first, pa.bool_()),
    }
    if mask_pieces is not None:
        columns[LOSS_MASK] = mask_pieces
    return pa.table(columns)


def interleaved(counts: list[Counts]) -> list[int]:
    """An order of packed blocks (each block's tokens per source) that spreads every
    source over the split: a block's place is the middle of its tokens within its main
    source's tokens (0..1), so a source's blocks are spaced by their size and sources
    alternate in the files (inputs are read one after the other; the trainer shuffles
    row groups, not rows across the split). Deterministic: ties go to the source's name
    and the block's index."""
    totals: dict[str, int] = {}
    mains: list[tuple[str, int]] = []
    for c in counts:
        main = max(sorted(c), key=lambda s: c[s][0], default="")
        kept = c[main][0] if main else 0
        mains.append((main, kept))
        totals[main] = totals.get(main, 0) + kept
    seen: dict[str, int] = {}
    places = []
    for b, (main, kept) in enumerate(mains):
        before = seen.get(main, 0)
        seen[main] = before + kept
        places.append(((before + kept / 2) / max(totals[main], 1), main, b))
    return [b for _, _, b in sorted(places)]


def packed_by_source(part: pa.Table, seq_len: int) -> Counts:
    """Per source, the tokens (and loss targets) of `part` that its packed rows hold:
    the stream is cut after its last whole row, and the pieces after the cut go to the
    tail (`tail`), counted where they are packed. Source -> [tokens, loss targets]
    (targets 0 without a mask)."""
    lengths = part["n_tokens"].to_numpy().astype(np.int64)
    ends = np.cumsum(lengths)
    cut = (int(ends[-1]) // seq_len) * seq_len if len(ends) else 0
    kept = np.clip(cut - (ends - lengths), 0, lengths)
    loss = np.zeros(len(lengths), dtype=np.int64)
    if LOSS_MASK in part.column_names and len(lengths):
        flags = pc.list_flatten(part[LOSS_MASK]).to_numpy(zero_copy_only=False)
        running = np.concatenate([[0], np.cumsum(flags[:cut], dtype=np.int64)])
        starts = np.minimum(ends - lengths, cut)
        loss = running[np.minimum(ends, cut)] - running[starts]
    sources = np.asarray(part[SOURCE].to_pylist(), dtype=object)
    return {
        str(s): [int(kept[sources == s].sum()), int(loss[sources == s].sum())]
        for s in sorted(set(sources.tolist()))
    }


def _row_sums(mask: pa.ListArray) -> pa.Array:
    """The number of True flags in each row of a list<bool> array."""
    offsets = mask.offsets.to_numpy().astype(np.int64)
    flags = mask.values.to_numpy(zero_copy_only=False)
    running = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return pa.array(running[offsets[1:]] - running[offsets[:-1]], pa.int64())


@dataclass(frozen=True)
class Plan:
    """How many times each source's train documents are written: `base[s]` times each,
    plus once more for documents whose key is at most `cut[s]` (None: none)."""

    base: dict[str, int]
    cut: dict[str, int | None]

    def counts(self, sources: list[str], keys: np.ndarray) -> np.ndarray:
        base = np.array([self.base.get(s, 1) for s in sources], dtype=np.int64)
        cuts = [self.cut.get(s) for s in sources]
        extra = [c is not None and int(k) <= c for c, k in zip(cuts, keys, strict=True)]
        return base + np.array(extra, dtype=np.int64)


def plan(
    train: pa.Table, weights: dict[str, float] | None, total_tokens: int | None
) -> tuple[Plan, dict[str, float]]:
    """The repeats of each source from its train documents (`SOURCE`, `key`, `n_tokens`):
    the plan and the repeats (epochs) each source's target asks for."""
    sources = train[SOURCE].to_numpy(zero_copy_only=False)
    tokens = train["n_tokens"].to_numpy()
    keys = train["key"].to_numpy()
    names = sorted(set(sources.tolist()))
    natural = {s: int(tokens[sources == s].sum()) for s in names}
    if weights is None:
        return Plan({s: 1 for s in names}, {s: None for s in names}), {s: 1.0 for s in names}
    empty = sorted(s for s in weights if not natural.get(s))
    if empty:  # its share could not be met: the stage fails rather than write another mix
        raise RuntimeError(f"tokenize.mixture: source {empty[0]} has no training document")
    total = total_tokens or sum(natural.values())
    base: dict[str, int] = {}
    cut: dict[str, int | None] = {}
    epochs: dict[str, float] = {}
    for s in names:
        r = weights[s] * total / max(natural[s], 1)
        epochs[s] = r
        base[s] = math.floor(r)
        rest = (r - base[s]) * natural[s]  # tokens wanted from the seeded sample
        order = np.argsort(keys[sources == s], kind="stable")
        sorted_keys = keys[sources == s][order]
        prefix = np.concatenate([[0], np.cumsum(tokens[sources == s][order])])
        m = int(np.argmin(np.abs(prefix - rest)))  # documents in the sample: closest count
        cut[s] = int(sorted_keys[m - 1]) if m > 0 else None
    return Plan(base, cut), epochs


def repeat_batch(batch: pa.Table, plan: Plan) -> pa.Table:
    """Write each document of a train batch as many times as the plan says: copy k of
    every document follows all first copies, so repeats are not adjacent."""
    counts = plan.counts(batch[SOURCE].to_pylist(), batch["key"].to_numpy())
    order = [i for k in range(int(counts.max(initial=0))) for i in np.flatnonzero(counts > k)]
    return batch.take(pa.array(order, pa.int64()))


def figures(
    docs: pa.Table, packed: dict[str, list[int]] | None = None
) -> dict[str, dict[str, Any]]:
    """Per source, of the documents a split writes (`SOURCE`, `id`, `n_tokens`, and
    `n_loss` under loss_on: assistant): documents (distinct), written (with repeats),
    tokens, share of tokens (and loss_tokens: targets of the loss). With `packed`
    (`packed_by_source` summed over the split), `tokens` and `loss_tokens` are those in
    the shards, `share` is theirs, and `planned_tokens` / `planned_share` are before
    packing cut each batch's tail."""
    sources = docs[SOURCE].to_numpy(zero_copy_only=False)
    loss = docs["n_loss"].to_numpy() if "n_loss" in docs.column_names else None
    tokens = docs["n_tokens"].to_numpy()
    ids = docs["id"].to_numpy(zero_copy_only=False)
    total = int(tokens.sum())
    out: dict[str, dict[str, Any]] = {}
    for s in sorted(set(sources.tolist())):
        mine = sources == s
        n = int(tokens[mine].sum())
        out[s] = {
            "documents": len(set(ids[mine].tolist())),
            "documents_written": int(mine.sum()),
            "tokens": n,
            "share": n / total if total else 0.0,
        }
        if loss is not None:
            out[s]["loss_tokens"] = int(loss[mine].sum())
    if packed is not None:
        in_shards = sum(packed.get(s, [0, 0])[0] for s in out)
        for s, fig in out.items():
            kept, targets = packed.get(s, [0, 0])
            fig["planned_tokens"], fig["planned_share"] = fig["tokens"], fig["share"]
            fig["tokens"], fig["share"] = kept, kept / in_shards if in_shards else 0.0
            if "loss_tokens" in fig:
                fig["loss_tokens"] = targets
    return out


def plot(report: dict[str, dict[str, Any]], weights: dict[str, float] | None) -> Any:
    """A small bar chart: each source's realized share of train tokens (and its target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(report)
    fig, ax = plt.subplots(figsize=(5, 0.6 + 0.5 * len(names)))
    y = np.arange(len(names))
    ax.barh(y, [report[n]["share"] for n in names], height=0.4, label="realized")
    if weights is not None:
        ax.barh(y + 0.4, [weights[n] for n in names], height=0.4, label="target")
    ax.set_yticks(y + (0.2 if weights else 0), [n[-40:] for n in names], fontsize=7)
    ax.set_xlabel("share of train tokens")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def labelled_documents(labels: dict[str, str]) -> Any:
    """`id`, `text` and `SOURCE` of every kept row of each input (URI -> source name), in
    blocks of exactly DOCS_PER_BATCH rows (the last excepted): each block is one batch of
    `TokenizeDocs` and of packing, whatever the files' sizes, so small inputs still
    spread over every actor and, read in order, the packed rows do not depend on timing."""
    parts = [
        read_documents([uri]).map_batches(
            _label, fn_args=(name,), batch_format="pyarrow", zero_copy_batch=True
        )
        for uri, name in labels.items()
    ]
    docs = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    return docs.repartition(target_num_rows_per_block=DOCS_PER_BATCH, strict=True)


@contextmanager
def in_order() -> Iterator[None]:
    """Ray Data keeps blocks in input order inside: batches, and so the packed rows, are
    the same in every run (the stage's shards are deterministic, not only its counts)."""
    from ray.data import DataContext

    options = DataContext.get_current().execution_options
    before = options.preserve_order
    options.preserve_order = True
    try:
        yield
    finally:
        options.preserve_order = before


def _label(batch: pa.Table, name: str) -> pa.Table:
    return batch.append_column(SOURCE, pa.array([name] * batch.num_rows, pa.string()))


def small_table(ds: Any, columns: list[str]) -> pa.Table:
    """A few small columns of every row of a Ray Dataset, on the driver, in block order.
    Plain Ray tasks select them where the blocks are, a few blocks each (cheaper than a
    Ray Data pass); only the selected columns travel."""
    import ray

    refs = ds.to_arrow_refs()  # a materialized dataset's own blocks: nothing runs
    per_task = max(
        1, math.ceil(len(refs) / (4 * max(1, int(ray.cluster_resources().get("CPU", 1)))))
    )
    select = ray.remote(num_cpus=0.5)(_select_columns)
    parts = ray.get(
        [select.remote(columns, *refs[i : i + per_task]) for i in range(0, len(refs), per_task)]
    )
    tables = [t for t in parts if t.num_rows]
    return pa.concat_tables(tables) if tables else pa.table({c: [] for c in columns})


def _select_columns(columns: list[str], *blocks: pa.Table) -> pa.Table:
    parts = [b.select(columns) for b in blocks if b.num_rows]
    return pa.concat_tables(parts) if parts else pa.table({c: [] for c in columns})


def written(docs: pa.Table, plan: Plan) -> pa.Table:
    """The rows of `docs` (a split's small table) as many times as the plan writes them."""
    counts = plan.counts(docs[SOURCE].to_pylist(), docs["key"].to_numpy())
    return docs.take(pa.array(np.repeat(np.arange(docs.num_rows), counts), pa.int64()))


def metric_name(source: str) -> str:
    """An MLflow-safe short name of a source (the last part of an input URI)."""
    import re

    short = source.rstrip("/").rsplit("/", 1)[-1] or source
    return re.sub(r"[^\w.\- ]", "_", short)
