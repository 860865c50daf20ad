"""The shuffles of MinHash: groupbys keyed by a group column, not by the key itself.

Every groupby here is keyed by a *group* column, `hash(key) % num_groups`, where
`num_groups` grows with the data (`group_bytes`): one `map_groups` call handles many keys
(buckets, nodes, ids) with vectorized pyarrow/numpy code, and a call's memory is about
`group_bytes` whatever the corpus size (beyond that, only a component's own size: the
links of one node share a group). Keying Ray's groupby by the bucket itself would call
Python once per bucket, and almost every bucket holds one document: 280k buckets took
36 s that way on a 2-core machine.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from lmforge.pipelines.minhash.config import MinHashConfig
from lmforge.pipelines.minhash.hashing import U64, hash_strings

GROUP = "_group"  # the groupby key of every shuffle below


def num_groups(nbytes: int, cfg: MinHashConfig) -> int:
    return max(1, math.ceil(nbytes / cfg.group_bytes))


def keyed(batch: pa.Table, key: str, groups: int, prepare: Any = None) -> pa.Table:
    """`prepare(batch)` (if any) with GROUP = hash(key) % groups appended."""
    t = prepare(batch) if prepare is not None else batch
    column = t[key]
    h = column.to_numpy() if pa.types.is_integer(column.type) else hash_strings(column)
    return t.append_column(GROUP, pa.array((h.astype(U64) % U64(groups)).astype(np.int64)))


def grouped(
    ds: Any, key: str, fn: Any, cfg: MinHashConfig, prepare: Any = None, scale: int = 1
) -> Any:
    """Materialized `ds` -> `fn` applied to groups of records, by hash of `key`."""
    groups = num_groups(ds.size_bytes() * scale, cfg)
    kwargs = {"key": key, "groups": groups, "prepare": prepare}
    ds = ds.map_batches(keyed, fn_kwargs=kwargs, batch_format="pyarrow")
    return ds.groupby(GROUP, num_partitions=groups).map_groups(fn, batch_format="pyarrow")
