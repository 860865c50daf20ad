"""Exact deduplication through a Ray Data groupby: no step holds the corpus on one node.

Rows are keyed by a hash of their normalized text and grouped into buckets of keys; among
rows sharing a key the one with the smallest id is kept (deterministic whatever the input
order), the others are dropped with reason `exact_duplicate` and the id they duplicate in
`meta`. Buckets, not keys, are the groups: Ray Data returns one table per group, and a
block made of one-row tables (one chunk per row) made every later pass over it 30-60x
slower (a no-op pass over 10,000 conversations: 15 s instead of 0.3 s).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa

from lmforge.pipelines.records import KEPT, to_table
from lmforge.pipelines.steps import update_meta

KEY = "_dedup_key"
BUCKET = "_dedup_bucket"


def text_key(text: str) -> str:
    # case and whitespace folded: "Hello  World" and "hello world" are one document
    return hashlib.blake2b(
        " ".join(text.lower().split()).encode("utf-8"), digest_size=16
    ).hexdigest()


def add_key(batch: pa.Table, text_of: Any = None, buckets: int = 1) -> pa.Table:
    """Kept rows get their text hash; others a key of their own, so they pass alone; each
    row its key's bucket. text_of: batch -> the texts to compare (default: `text`)."""
    texts = text_of(batch) if text_of is not None else batch["text"]
    keys = [
        text_key(t or "") if f == KEPT else f"~{f}:{i}"
        for t, f, i in zip(
            texts.to_pylist(),
            batch["fate"].to_pylist(),
            batch["id"].to_pylist(),
            strict=True,
        )
    ]
    bucket = [
        int(hashlib.blake2b(k.encode(), digest_size=4).hexdigest(), 16) % buckets for k in keys
    ]
    batch = batch.append_column(KEY, pa.array(keys, pa.string()))
    return batch.append_column(BUCKET, pa.array(bucket, pa.int32()))


def resolve_group(
    group: pa.Table, step: str = "exact_dedup", reason: str = "exact_duplicate"
) -> pa.Table:
    """All rows of one bucket: per key, keep the smallest id and drop the rest."""
    keys = group[KEY].to_pylist()
    rows = group.drop_columns([KEY, BUCKET]).to_pylist()
    first: dict[str, dict[str, Any]] = {}
    for key, row in zip(keys, rows, strict=True):
        if key.startswith("~"):
            continue  # rows already dropped or quarantined are never duplicates
        best = first.get(key)
        if best is None or row["id"] < best["id"]:
            first[key] = row
    for key, row in zip(keys, rows, strict=True):
        best = first.get(key)
        if best is not None and best is not row:
            update_meta(row, duplicate_of=best["id"])
            row.update(fate="dropped", step=step, reason=reason)
    return to_table(rows)


def exact_dedup(
    ds: Any,
    *,
    num_partitions: int | None = None,
    text_of: Any = None,
    step: str = "exact_dedup",
    reason: str = "exact_duplicate",
    shuffle_strategy: str | None = "sort_shuffle_pull_based",
) -> Any:
    """Ray Dataset -> the same rows, duplicates among kept rows marked dropped.

    text_of: a function from a batch to the texts compared (default: the `text` column);
    the synthetic stage compares prompts. step, reason: what the dropped rows carry.
    shuffle_strategy: Ray Data's for the groupby (None keeps the dataset's); the task-based
    sort shuffle by default, as in MinHash, which starts no aggregator actors.

    num_partitions: shuffle partitions (default: 2 per CPU of the cluster, not Ray's
    fixed 200, which leaves every later pass 200 tiny tasks on a small corpus)."""
    import ray

    if num_partitions is None:
        num_partitions = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    buckets = 8 * num_partitions
    keyed = ds.map_batches(
        add_key,
        fn_kwargs={"text_of": text_of, "buckets": buckets},
        batch_format="pyarrow",
        zero_copy_batch=True,
    )
    if shuffle_strategy is not None:  # datasets derived from `keyed` inherit it
        keyed.context.shuffle_strategy = shuffle_strategy
    grouped = keyed.groupby(BUCKET, num_partitions=num_partitions)
    return grouped.map_groups(
        resolve_group, fn_kwargs={"step": step, "reason": reason}, batch_format="pyarrow"
    )
