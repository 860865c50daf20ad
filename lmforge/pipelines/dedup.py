"""Exact deduplication through a Ray Data groupby: no step holds the corpus on one node.

Rows are grouped by a hash of their normalized text; in each group the row with the
smallest id is kept (deterministic whatever the input order), the others are dropped
with reason `exact_duplicate` and the id they duplicate in `meta`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa

from lmforge.pipelines.records import KEPT, to_table
from lmforge.pipelines.steps import update_meta

KEY = "_dedup_key"


def text_key(text: str) -> str:
    # case and whitespace folded: "Hello  World" and "hello world" are one document
    return hashlib.blake2b(
        " ".join(text.lower().split()).encode("utf-8"), digest_size=16
    ).hexdigest()


def add_key(batch: pa.Table) -> pa.Table:
    """Kept rows get their text hash; others a key of their own, so they pass alone."""
    keys = [
        text_key(t) if f == KEPT else f"~{f}:{i}"
        for t, f, i in zip(
            batch["text"].to_pylist(),
            batch["fate"].to_pylist(),
            batch["id"].to_pylist(),
            strict=True,
        )
    ]
    return batch.append_column(KEY, pa.array(keys, pa.string()))


def resolve_group(group: pa.Table) -> pa.Table:
    """All rows sharing one key: keep the smallest id, drop the rest."""
    table = group.drop_columns([KEY])
    if table.num_rows == 1 or group[KEY][0].as_py().startswith("~"):
        return table  # rows already dropped or quarantined are never duplicates
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    first = rows[0]
    for row in rows[1:]:
        update_meta(row, duplicate_of=first["id"])
        row.update(fate="dropped", step="exact_dedup", reason="exact_duplicate")
    return to_table(rows)


def exact_dedup(ds: Any, *, num_partitions: int | None = None) -> Any:
    """Ray Dataset -> the same rows, duplicates among kept rows marked dropped.

    num_partitions: shuffle partitions (default: 2 per CPU of the cluster, not Ray's
    fixed 200, which leaves every later pass 200 tiny tasks on a small corpus)."""
    import ray

    if num_partitions is None:
        num_partitions = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    keyed = ds.map_batches(add_key, batch_format="pyarrow", zero_copy_batch=True)
    grouped = keyed.groupby(KEY, num_partitions=num_partitions)
    return grouped.map_groups(resolve_group, batch_format="pyarrow")
