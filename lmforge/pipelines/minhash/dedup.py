"""The MinHash dedup step: signatures, buckets and components, then the labels merged
into the rows, near duplicates marked dropped; and the cluster sizes of its output."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmforge.pipelines.minhash.banding import band_records, bucket_edges
from lmforge.pipelines.minhash.components import (
    ROOT,
    SIZE,
    component_labels,
    connected_components,
)
from lmforge.pipelines.minhash.config import REASON, STEP, MinHashConfig
from lmforge.pipelines.minhash.groups import GROUP, grouped, keyed, num_groups
from lmforge.pipelines.records import DROPPED, KEPT, conform

log = logging.getLogger(__name__)

BATCH = 1024  # documents signed at once: enough to amortize numpy calls, memory stays small


def apply_labels(group: pa.Table, step: str = STEP, reason: str = REASON) -> pa.Table:
    """Rows and label rows of some ids -> the rows, each kept row whose component root is
    another id marked dropped, with `duplicate_of` and `cluster_size` added to its meta."""
    is_label = group[ROOT].is_valid()
    labels = group.filter(is_label).group_by("id").aggregate([(ROOT, "min"), (SIZE, "max")])
    rows = conform(group.filter(pc.invert(is_label)))
    if labels.num_rows == 0:
        return rows
    at = pc.index_in(rows["id"], value_set=labels["id"])
    root = labels[f"{ROOT}_min"].take(at)
    hit = pc.fill_null(pc.and_(pc.equal(rows["fate"], KEPT), pc.not_equal(root, rows["id"])), False)
    idx = pa.array(np.flatnonzero(hit.to_numpy(zero_copy_only=False)), pa.int64())
    if len(idx) == 0:
        return rows
    metas = []
    for meta, dup, size in zip(
        rows["meta"].take(idx).to_pylist(),
        root.take(idx).to_pylist(),
        labels[f"{SIZE}_max"].take(at).take(idx).to_pylist(),
        strict=True,
    ):
        extra = json.loads(meta) if meta else {}
        metas.append(json.dumps({**extra, "duplicate_of": dup, "cluster_size": size}))
    changes = {
        "fate": pa.array([DROPPED] * len(idx), pa.string()),
        "step": pa.array([step] * len(idx), pa.string()),
        "reason": pa.array([reason] * len(idx), pa.string()),
        "meta": pa.array(metas, pa.string()),
    }
    for name, values in changes.items():
        column = pc.replace_with_mask(rows[name].combine_chunks(), hit.combine_chunks(), values)
        rows = rows.set_column(rows.schema.get_field_index(name), name, column)
    return rows


def with_label_columns(
    table: pa.Table, groups: int, root: Any = None, size: Any = None
) -> pa.Table:
    """ROW_SCHEMA + (GROUP by id, ROOT, SIZE): the one schema of data and label rows."""
    t = conform(table)
    n = t.num_rows
    t = t.append_column(ROOT, root if root is not None else pa.nulls(n, pa.string()))
    t = t.append_column(SIZE, size if size is not None else pa.nulls(n, pa.int64()))
    return keyed(t, "id", groups)


def label_rows(labels: pa.Table, groups: int) -> pa.Table:
    return with_label_columns(pa.table({"id": labels["id"]}), groups, labels[ROOT], labels[SIZE])


def minhash_dedup(ds: Any, cfg: MinHashConfig) -> Any:
    """Ray Dataset of ROW_SCHEMA rows -> the same rows, near duplicates among kept rows
    marked dropped (`minhash_dedup`/`near_duplicate`, meta `duplicate_of`,
    `cluster_size`); rows not kept pass through untouched.

    Signatures, buckets and components run here (the rounds need their counts); the
    final merge of labels into the rows is lazy, like the other steps.
    """
    rows = ds.map_batches(conform, batch_format="pyarrow")
    if cfg.shuffle_strategy is not None:  # datasets derived from `rows` inherit it
        rows.context.shuffle_strategy = cfg.shuffle_strategy
    return _minhash_dedup(rows.materialize(), cfg)


def _minhash_dedup(rows: Any, cfg: MinHashConfig) -> Any:
    bands = rows.map_batches(
        band_records, fn_kwargs={"cfg": cfg}, batch_format="pyarrow", batch_size=BATCH
    ).materialize()
    edges = grouped(bands, "band_hash", bucket_edges, cfg).materialize() if bands.count() else None
    if edges is None or edges.count() == 0:
        return rows
    log.info("minhash: %d candidate links from %d band records", edges.count(), bands.count())
    del bands
    edges = connected_components(edges, cfg)
    groups = num_groups(rows.size_bytes(), cfg)
    labels = grouped(edges, "src", component_labels, cfg)
    labels = labels.map_batches(label_rows, fn_kwargs={"groups": groups}, batch_format="pyarrow")
    data = rows.map_batches(
        with_label_columns, fn_kwargs={"groups": groups}, batch_format="pyarrow"
    )
    merged = data.union(labels).groupby(GROUP, num_partitions=groups)
    return merged.map_groups(
        apply_labels, fn_kwargs={"step": cfg.step, "reason": cfg.reason}, batch_format="pyarrow"
    )


def dropped_cluster_sizes(batch: pa.Table) -> pa.Table:
    mask = pc.fill_null(
        pc.and_(pc.equal(batch["fate"], DROPPED), pc.equal(batch["step"], STEP)), False
    )
    metas = batch["meta"].filter(mask).to_pylist()
    return pa.table(
        {"cluster_size": pa.array([json.loads(m)["cluster_size"] for m in metas], pa.int64())}
    )


def cluster_sizes(
    ds: Any, shuffle_strategy: str | None = "sort_shuffle_pull_based"
) -> dict[int, int]:
    """Output of `minhash_dedup` -> {cluster size: number of clusters} for clusters of two
    or more documents. A cluster of n has n - 1 dropped rows, each carrying n."""
    sizes = ds.map_batches(dropped_cluster_sizes, batch_format="pyarrow")
    if shuffle_strategy is not None:
        sizes.context.shuffle_strategy = shuffle_strategy
    counts = sizes.groupby("cluster_size").count().take_all()  # one row per distinct size
    return {
        int(r["cluster_size"]): int(r["count()"]) // (int(r["cluster_size"]) - 1)
        for r in sorted(counts, key=lambda r: r["cluster_size"])
    }
