"""LSH banding: documents whose signatures agree on all rows of a band share a bucket.

A bucket that holds two or more documents connects each of them to its smallest id (a
star, not all pairs): the edges that `components` joins into clusters.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmforge.pipelines.minhash.components import unique_edges
from lmforge.pipelines.minhash.config import MinHashConfig
from lmforge.pipelines.minhash.hashing import MUL, U64, fmix64
from lmforge.pipelines.minhash.signatures import MinHasher
from lmforge.pipelines.records import KEPT


def band_hashes(sig: np.ndarray, cfg: MinHashConfig) -> np.ndarray:
    """(D, P) uint32 signatures -> (D, num_bands) uint64: one hash of each band's rows."""
    rows = sig.reshape(len(sig), cfg.num_bands, cfg.rows_per_band).astype(U64)
    h = np.zeros(rows.shape[:2], U64)
    with np.errstate(over="ignore"):
        for k in range(cfg.rows_per_band):
            h = h * MUL + rows[:, :, k]
    return fmix64(h)


def band_records(batch: pa.Table, cfg: MinHashConfig) -> pa.Table:
    """Kept rows -> num_bands records each: (band_index, band_hash, id)."""
    mask = pc.and_(pc.equal(batch["fate"], KEPT), pc.is_valid(batch["id"]))
    kept = batch.filter(pc.fill_null(mask, False))
    sig, has = MinHasher(cfg)(cfg.text_of(kept) if cfg.text_of is not None else kept["text"])
    hashes = band_hashes(sig[has], cfg)  # (D, b)
    ids = kept["id"].filter(pa.array(has))
    return pa.table(
        {
            "band_index": np.tile(np.arange(cfg.num_bands, dtype=np.int32), len(hashes)),
            "band_hash": hashes.ravel(),
            "id": ids.take(np.repeat(np.arange(len(hashes)), cfg.num_bands)),
        }
    )


def bucket_edges(group: pa.Table) -> pa.Table:
    """Band records of some buckets -> edges (src, dst): every id of a bucket to the
    bucket's smallest id (src < dst, each pair once)."""
    t = group.sort_by(
        [("band_index", "ascending"), ("band_hash", "ascending"), ("id", "ascending")]
    )
    band, bucket = t["band_index"].to_numpy(), t["band_hash"].to_numpy()
    new = np.concatenate([[True], (band[1:] != band[:-1]) | (bucket[1:] != bucket[:-1])])
    first = np.maximum.accumulate(np.where(new, np.arange(len(new)), 0))  # bucket's min id
    member = np.flatnonzero(~new)
    ids = t["id"]
    return unique_edges(ids.take(first[member]), ids.take(member))
