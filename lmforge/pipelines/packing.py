"""Tokenize documents and pack them into fixed-length training sequences.

Each document is encoded and followed by the end-of-text token; the stream of a batch
is cut into rows of exactly `seq_len` tokens. A row records where documents start
inside it (`doc_starts`), so document-masked attention can be added later without
re-tokenizing. The tail of a batch that does not fill a row is dropped; documents that
start in it are the difference between documents read and `doc_starts` written.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmforge.pipelines.outputs import parquet_dataset
from lmforge.platform import storage

SEQ_SCHEMA_FIELDS = [
    ("input_ids", pa.list_(pa.int32())),  # (seq_len,)
    ("doc_starts", pa.list_(pa.int32())),  # offsets where a document begins in this row
]
SEQ_SCHEMA = pa.schema(SEQ_SCHEMA_FIELDS)
DOCS_PER_BATCH = 2048  # bigger batches waste less in the tail of each packed stream


def is_validation(doc_id: str, fraction: float) -> bool:
    """Deterministic document-level split: the same id always lands in the same split."""
    h = int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "big")
    return (h % 1_000_000) < fraction * 1_000_000


def pack(docs: list[list[int]], eos_id: int, seq_len: int) -> pa.Table:
    """Concatenate docs (each + EOS) and cut into rows of seq_len tokens."""
    lengths = [len(d) + 1 for d in docs]
    stream = np.empty(sum(lengths), dtype=np.int32)
    starts = np.zeros(len(docs), dtype=np.int64)
    pos = 0
    for i, d in enumerate(docs):
        starts[i] = pos
        stream[pos : pos + len(d)] = d
        stream[pos + len(d)] = eos_id
        pos += len(d) + 1
    n_rows = len(stream) // seq_len
    rows = stream[: n_rows * seq_len].reshape(n_rows, seq_len)
    # document starts per row, as offsets inside that row
    row_of_start = starts // seq_len
    doc_starts = [
        (starts[row_of_start == r] - r * seq_len).astype(np.int32).tolist() for r in range(n_rows)
    ]
    return pa.table(
        {
            "input_ids": pa.array(rows.tolist(), pa.list_(pa.int32())),
            "doc_starts": pa.array(doc_starts, pa.list_(pa.int32())),
        },
        schema=SEQ_SCHEMA,
    )


def read_documents(inputs: list[str]) -> Any:
    """`id` and `text` of every kept row of the given stage outputs (or Parquet files)."""
    import ray.data

    parts = []
    for uri in inputs:
        folder = storage.join(uri, "kept") if storage.read_manifest(uri) else uri
        ds = ray.data.read_parquet(folder, file_extensions=["parquet"]).select_columns(
            ["id", "text"]
        )
        parts.append(ds)
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


ROW_GROUP_SEQUENCES = 1024


def pack_batch(batch: pa.Table, eos_id: int, seq_len: int) -> pa.Table:
    """Documents already tokenized (`input_ids`, no EOS) -> packed rows (SEQ_SCHEMA)."""
    return pack(batch["input_ids"].to_pylist(), eos_id, seq_len)


def write_packed(docs: Any, eos_id: int, folder: str, *, seq_len: int) -> None:
    """Pack a Ray Dataset of tokenized documents in batches of DOCS_PER_BATCH and write
    the rows as Parquet under `folder`."""
    # row groups of 1,024 sequences: pretraining reads one group at a time per rank (32 MiB
    # of int32 ids at seq_len 8192), files of 50,000+ sequences
    docs.map_batches(
        pack_batch, fn_args=(eos_id, seq_len), batch_size=DOCS_PER_BATCH, batch_format="pyarrow"
    ).write_parquet(folder, min_rows_per_file=50_000, row_group_size=ROW_GROUP_SEQUENCES)


def split_counts(folder: str, docs_read: int, seq_len: int) -> dict[str, int]:
    dataset = parquet_dataset(folder)
    if dataset is None:
        return {"documents": docs_read, "documents_packed": 0, "sequences": 0, "tokens": 0}
    starts = dataset.to_table(columns=["doc_starts"])["doc_starts"]
    packed = int(pc.sum(pc.list_value_length(starts)).as_py() or 0)
    n = dataset.count_rows()
    return {
        "documents": docs_read,
        # documents written (a repeated one each time) that start in a packed row; the
        # rest started in a batch's unpacked tail
        "documents_packed": packed,
        "sequences": n,
        "tokens": n * seq_len,
    }
