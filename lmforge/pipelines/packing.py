"""Tokenize documents and pack them into fixed-length training sequences.

Each document is encoded and followed by the end-of-text token; the stream of a batch
is cut into rows of exactly `seq_len` tokens. A row records where documents start
inside it (`doc_starts`), so document-masked attention can be added later without
re-tokenizing. With `tokenize.loss_on: assistant` a row also carries `loss_mask`, one
flag per token: True where the token is a target of the training loss (see
`assistant_mask`). The tail of a batch that does not fill a row is not dropped: it is
carried (`stream_tail`) and packed with the other batches' tails, in batch order, so a
split loses less than one row of tokens in all, however many batches it has and
however few tokens each holds after a mixture samples it down. A piece of a document
cut by a row is not a document start in the row that takes it (`START`).

Packing works on whole Arrow arrays (the flat token values and the offsets of each
document), never on Python lists: it costs a few percent of the tokenizer's time.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmforge.pipelines.outputs import parquet_dataset
from lmforge.platform import chat, storage

SEQ_SCHEMA_FIELDS = [
    ("input_ids", pa.list_(pa.int32())),  # (seq_len,)
    ("doc_starts", pa.list_(pa.int32())),  # offsets where a document begins in this row
]
SEQ_SCHEMA = pa.schema(SEQ_SCHEMA_FIELDS)
LOSS_MASK = "loss_mask"  # (seq_len,) bools, only with tokenize.loss_on: assistant
START = "start"  # of a carried piece of a document: does the piece begin its document
MASKED_SEQ_SCHEMA = SEQ_SCHEMA.append(pa.field(LOSS_MASK, pa.list_(pa.bool_())))
DOCS_PER_BATCH = 2048  # documents per block: one call of tokenizing and of packing


def is_validation(doc_id: str, fraction: float) -> bool:
    """Deterministic document-level split: the same id always lands in the same split."""
    h = int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "big")
    return (h % 1_000_000) < fraction * 1_000_000


def with_eos(ids: pa.Array, eos_id: int) -> pa.ListArray:
    """Each document's token ids (a list<int32> array) followed by the end-of-text token."""
    ids = _list_array(ids)
    offsets = ids.offsets.to_numpy()
    values = _values(ids)
    n = len(offsets) - 1
    stream = np.insert(values, offsets[1:] - offsets[0], np.int32(eos_id))
    return pa.ListArray.from_arrays(
        pa.array(offsets - offsets[0] + np.arange(n + 1), pa.int32()), pa.array(stream, pa.int32())
    )


def pack_documents(
    docs: pa.Array, seq_len: int, mask: pa.Array | None = None, begins: Any = None
) -> pa.Table:
    """Documents (list<int32>, each already ending in EOS) -> rows of `seq_len` tokens:
    `input_ids`, `doc_starts` and, given a per-token `mask` of the same shape, `loss_mask`.
    `begins` (one bool per entry of `docs`; default all True): False for a piece that
    continues a document, whose start is then not recorded."""
    docs = _list_array(docs)
    offsets = docs.offsets.to_numpy().astype(np.int64)
    stream = _values(docs)
    n_rows = len(stream) // seq_len
    cut = n_rows * seq_len
    starts = offsets[:-1] - offsets[0]
    first = np.diff(offsets) > 0
    if begins is not None:
        first &= _bools(begins)
    starts = starts[(starts < cut) & first]
    row_of_start = starts // seq_len
    start_offsets = np.searchsorted(row_of_start, np.arange(n_rows + 1), side="left")
    row_offsets = pa.array(np.arange(0, cut + 1, seq_len), pa.int32())
    columns: dict[str, Any] = {
        "input_ids": pa.ListArray.from_arrays(row_offsets, pa.array(stream[:cut], pa.int32())),
        "doc_starts": pa.ListArray.from_arrays(
            pa.array(start_offsets, pa.int32()),
            pa.array((starts - row_of_start * seq_len).astype(np.int32), pa.int32()),
        ),
    }
    if mask is None:
        return pa.table(columns, schema=SEQ_SCHEMA)
    flags = _values(_list_array(mask))
    if len(flags) != len(stream):
        raise ValueError(f"loss mask of {len(flags)} flags for {len(stream)} tokens")
    columns[LOSS_MASK] = pa.ListArray.from_arrays(row_offsets, pa.array(flags[:cut], pa.bool_()))
    return pa.table(columns, schema=MASKED_SEQ_SCHEMA)


def stream_tail(
    docs: pa.Array, seq_len: int, mask: pa.Array | None = None, begins: Any = None
) -> tuple[pa.ListArray, pa.ListArray | None, np.ndarray, np.ndarray]:
    """What `pack_documents` leaves after its last whole row, to be packed later: the
    pieces of the documents that reach past the cut (the first may be the end of a
    document that a row cut), their loss mask pieces (given `mask`), the index in `docs`
    of each piece's document, and whether each piece begins its document."""
    docs = _list_array(docs)
    offsets = docs.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]
    stream = _values(docs)
    cut = (len(stream) // seq_len) * seq_len
    index = np.flatnonzero((offsets[1:] > cut) & (np.diff(offsets) > 0))
    lo = np.maximum(offsets[:-1][index], cut)
    piece_offsets = pa.array(np.append(lo, len(stream)) - cut, pa.int32())
    pieces = pa.ListArray.from_arrays(piece_offsets, pa.array(stream[cut:], pa.int32()))
    mask_pieces = None
    if mask is not None:
        flags = _values(_list_array(mask))
        mask_pieces = pa.ListArray.from_arrays(piece_offsets, pa.array(flags[cut:], pa.bool_()))
    first = offsets[:-1][index] >= cut
    if begins is not None:
        first &= _bools(begins)[index]
    return pieces, mask_pieces, index, first


def _bools(a: Any) -> np.ndarray:
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    if isinstance(a, pa.Array):
        return np.asarray(a.to_numpy(zero_copy_only=False), dtype=bool)
    return np.asarray(a, dtype=bool)


def pack(docs: list[list[int]], eos_id: int, seq_len: int) -> pa.Table:
    """Concatenate docs (each + EOS) and cut into rows of seq_len tokens."""
    return pack_documents(with_eos(pa.array(docs, pa.list_(pa.int32())), eos_id), seq_len)


def chat_token_ids(tok: Any) -> dict[str, int]:
    """The ids `assistant_mask` needs from a tokenizer built by `train_tokenizer`: each
    role token's, and that of the newline closing a turn header."""
    ids = {role: tok.convert_tokens_to_ids(t) for role, t in chat.ROLE_TOKENS.items()}
    newline = tok(chat.TURN_END, add_special_tokens=False)["input_ids"]
    return {**ids, "newline": newline[0] if len(newline) == 1 else -1}


_NONE, _SYSTEM, _USER, _ASSISTANT = 0, 1, 2, 3
_ROLE_CODES = {"system": _SYSTEM, "user": _USER, "assistant": _ASSISTANT}


def assistant_mask(docs: pa.Array, ids: dict[str, int]) -> pa.ListArray:
    """Per token of each document (list<int32>, ending in EOS): is it a target of the
    loss under `tokenize.loss_on: assistant`?

    A token belongs to the turn opened by the last role token before it (within its
    document). Trained: the content of assistant turns with the newline ending each turn,
    and the EOS after a conversation whose last turn is the assistant's, so the model
    learns to stop; and every token of a document that has no role token (web text stays
    pretraining). Not trained: role tokens, the newline of each turn header, and system
    and user turns."""
    docs = _list_array(docs)
    offsets = docs.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]
    tokens = _values(docs)
    n = len(tokens)
    code = np.zeros(n, dtype=np.int8)
    is_role = np.zeros(n, dtype=bool)
    for role, c in _ROLE_CODES.items():
        hit = tokens == ids[role]
        code[hit] = c
        is_role |= hit
    event = is_role.copy()
    doc_first = offsets[:-1][np.diff(offsets) > 0]
    event[doc_first] = True  # a document starts outside any turn (unless on a role token)
    last_event = np.maximum.accumulate(np.where(event, np.arange(n), 0)) if n else np.zeros(0, int)
    state = code[last_event]
    header_end = np.zeros(n, dtype=bool)
    header_end[1:] = is_role[:-1] & (tokens[1:] == ids["newline"])
    keep = ((state == _NONE) | (state == _ASSISTANT)) & ~is_role & ~header_end
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(keep, pa.bool_()))


def read_documents(inputs: list[str]) -> Any:
    """`id` and `text` (strings) of every kept row of the given stage outputs (or folders
    of Parquet files). A folder without an `id` column gets each text's hash as its id, so
    the same text always lands in the same split; a non-string id is written as text and
    a null text as empty. An input without a `text` column is a ValueError naming it."""
    import ray.data

    parts = []
    for uri in inputs:
        ds = ray.data.read_parquet(documents_folder(uri), file_extensions=["parquet"])
        names = ds.schema().names
        if "text" not in names:
            raise ValueError(
                f"tokenize.input: {uri} has no `text` column (columns: {', '.join(names)})"
            )
        ds = ds.select_columns(["id", "text"] if "id" in names else ["text"])
        parts.append(ds.map_batches(_id_and_text, batch_format="pyarrow", zero_copy_batch=True))
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def documents_folder(uri: str) -> str:
    """Where an input's documents are: a stage output's `kept/`, or the folder itself."""
    return storage.join(uri, "kept") if storage.read_manifest(uri) else uri


def check_text_column(uri: str) -> None:
    """ConfigError naming tokenize.input when a local input's Parquet files have no
    `text` column (checked before Ray starts; a remote input is checked when read)."""
    from lmforge.platform.config import ConfigError

    if storage.is_remote(uri) or any(c in uri for c in "*?["):
        return
    dataset = parquet_dataset(documents_folder(uri))
    if dataset is not None and "text" not in dataset.schema.names:
        raise ConfigError(
            f"tokenize.input: {uri} has no `text` column "
            f"(columns: {', '.join(dataset.schema.names)})"
        )


def _id_and_text(batch: pa.Table) -> pa.Table:
    text = pc.fill_null(batch["text"].cast(pa.string()), "")
    given = batch["id"].cast(pa.string()) if "id" in batch.column_names else None
    if given is not None and given.null_count == 0:
        return pa.table({"id": given, "text": text})
    ids = given.to_pylist() if given is not None else [None] * batch.num_rows
    hashed = [
        i if i is not None else "sha-" + hashlib.blake2b(t.encode(), digest_size=12).hexdigest()
        for i, t in zip(ids, text.to_pylist(), strict=True)
    ]
    return pa.table({"id": pa.array(hashed, pa.string()), "text": text})


ROW_GROUP_SEQUENCES = 1024


def pack_batch(batch: pa.Table, seq_len: int) -> pa.Table:
    """Tokenized documents (`input_ids` ending in EOS, and `loss_mask` when the batch has
    one; carried pieces have `START`) -> packed rows (SEQ_SCHEMA, or MASKED_SEQ_SCHEMA)."""
    mask = batch[LOSS_MASK] if LOSS_MASK in batch.column_names else None
    begins = batch[START] if START in batch.column_names else None
    return pack_documents(batch["input_ids"], seq_len, mask, begins)


def write_packed(rows: Any, folder: str) -> None:
    """Write a Ray Dataset of packed rows as Parquet under `folder`."""
    # row groups of 1,024 sequences: pretraining reads one group at a time per rank (32 MiB
    # of int32 ids at seq_len 8192), files of 50,000+ sequences
    rows.write_parquet(folder, min_rows_per_file=50_000, row_group_size=ROW_GROUP_SEQUENCES)


def split_counts(folder: str, docs_read: int, seq_len: int) -> dict[str, int]:
    dataset = parquet_dataset(folder)
    if dataset is None:
        return {"documents": docs_read, "documents_packed": 0, "sequences": 0, "tokens": 0}
    names = dataset.schema.names
    columns = ["doc_starts", *([LOSS_MASK] if LOSS_MASK in names else [])]
    table = dataset.to_table(columns=columns)
    packed = int(pc.sum(pc.list_value_length(table["doc_starts"])).as_py() or 0)
    n = table.num_rows
    out = {
        "documents": docs_read,
        # documents written (a repeated one each time) that start in a packed row; the
        # rest started in the split's last, unpacked tail (less than one row)
        "documents_packed": packed,
        "sequences": n,
        "tokens": n * seq_len,
    }
    if LOSS_MASK in names:  # targets of the loss (the flag of a row's first token unused)
        out["loss_tokens"] = int(pc.sum(pc.list_flatten(table[LOSS_MASK])).as_py() or 0)
    return out


def _list_array(a: Any) -> pa.ListArray:
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks() if a.num_chunks != 1 else a.chunk(0)
    if pa.types.is_large_list(a.type):
        a = a.cast(pa.list_(a.type.value_type))
    return a


def _values(a: pa.ListArray) -> np.ndarray:
    """The flat values of a list array's rows (its slice of the child array)."""
    offsets = a.offsets
    lo, hi = offsets[0].as_py(), offsets[-1].as_py()
    return a.values.slice(lo, hi - lo).to_numpy(zero_copy_only=False)
