"""MinHash LSH near-duplicate removal on Ray Data, with no step that holds the corpus.

    rows --signatures, bands--> (band_index, band_hash, id) --groupby bucket--> edges
         --connected components (large-star / small-star rounds)--> (id, root, size)
         --groupby id, with the rows--> rows, near duplicates marked dropped

Signatures are computed a batch at a time with numpy: shingles are hashed once, then
all permutations are applied to all shingles of the batch as one (perms, shingles) array
that is min-reduced per document. A bucket that holds two or more documents connects
each of them to its smallest id (a star, not all pairs); components of that graph are
found by rounds of groupby over the edge list, and each component keeps the document with
the smallest id. The driver sees only sizes and per-round counts.

Every groupby here is keyed by a *group* column, `hash(key) % num_groups`, where
`num_groups` grows with the data (`group_bytes`): one `map_groups` call handles many keys
(buckets, nodes, ids) with vectorized pyarrow/numpy code, and a call's memory is about
`group_bytes` whatever the corpus size (beyond that, only a component's own size: the
links of one node share a group). Keying Ray's groupby by the bucket itself would call
Python once per bucket, and almost every bucket holds one document: 280k buckets took
36 s that way on a 2-core machine.
"""

from __future__ import annotations

import json
import logging
import math
import string
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmforge.pipelines.records import DROPPED, KEPT, conform

__all__ = ["MinHashConfig", "MinHasher", "cluster_sizes", "minhash_dedup"]

log = logging.getLogger(__name__)

STEP, REASON = "minhash_dedup", "near_duplicate"
GROUP = "_group"  # the groupby key of every shuffle below
ROOT, SIZE = "_root", "_size"  # a label row: the component's kept id and its size

# CJK ideographs, Hiragana/Katakana, Hangul (jamo, compatibility jamo, syllables),
# compatibility ideographs and half-width Katakana
CJK = (
    "[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]"
)
# trimmed from both ends of whitespace-separated words ("(see" and "see," are "see")
PUNCT = string.punctuation + "“”‘’«»„‚…—–¡¿·、。，．・：；！？「」『』（）［］【】〈〉《》"

U64 = np.uint64
MAX_U64 = U64(2**64 - 1)
MUL = U64(0x9E3779B97F4A7C15)  # odd: combines token hashes position by position
CHUNK = 1024  # shingles per (perms, shingles) block: 112 x 1024 x 8 B fits in L2
BATCH = 1024  # documents signed at once: enough to amortize numpy calls, memory stays small


@dataclass(kw_only=True)
class MinHashConfig:
    """How documents are shingled, signed and banded, and how components are found.

    The defaults are datatrove's and FineWeb's: 5-gram shingles, 14 bands of 8 rows
    (112 permutations). Two documents with Jaccard similarity s share at least one band
    with probability 1 - (1 - s^8)^14, an S-curve that crosses 1/2 near the threshold
    (1/b)^(1/r) = (1/14)^(1/8) ≈ 0.72: at s = 0.8 a pair is found 92% of the time,
    at s = 0.9 99.9%, at s = 0.5 only 5%.
    """

    ngram: int = 5
    """Words per shingle; words are the text lowercased, split at whitespace, with
    punctuation trimmed from both ends (a word of punctuation alone is skipped)."""
    char_ngram: int = 5
    """Characters per shingle for CJK text, which does not separate words by spaces."""
    cjk_share: float = 0.1
    """A document whose characters are at least this share CJK/Kana/Hangul is shingled
    by characters (whitespace, punctuation and symbols removed), others by words. In the
    Japanese Debian documents the share is 0.32 at the median, under 0.1 for the 10% that
    are mostly commands and paths, which word shingles suit."""
    num_bands: int = 14
    """LSH bands b: documents sharing all rows of any one band become candidates."""
    rows_per_band: int = 8
    """Rows r per band; the signature has b * r permutations."""
    seed: int = 1
    """Seed of the permutations: runs with one seed give the same signatures."""
    max_cc_iterations: int = 30
    """At most this many large-star + small-star rounds; they converge in O(log^2 n)
    (Kiveris et al. 2014), in 2-4 rounds on real duplicate clusters. A run that hits the
    limit logs a warning and merges only what it has connected."""
    shuffle_strategy: str | None = "sort_shuffle_pull_based"
    """Ray Data shuffle for this step's groupbys and counts (a `DataContext.shuffle_strategy`
    value; None keeps the caller's). The task-based sort shuffle starts in well under a
    second; the hash shuffle starts aggregator actors per operation (7-20 s each on a busy
    2-core machine), which would dominate the small shuffles of the component rounds.
    Ray plans a dataset's shuffles with its own context, so the returned dataset keeps
    this strategy (set `out.context.shuffle_strategy` for shuffles after it)."""
    step: str = STEP
    """The step name dropped rows carry (`prompt_dedup` when deduplicating prompts)."""
    reason: str = REASON
    """The reason dropped rows carry."""
    text_of: Any = None
    """A function from a batch (pyarrow Table) to the texts to compare (a string array);
    None compares the `text` column. The synthetic stage compares prompts this way."""
    group_bytes: int = 64 << 20
    """About how many bytes of records one `map_groups` call holds: each shuffle has
    ceil(size / group_bytes) groups, so a task's memory is bounded whatever the corpus."""

    @property
    def num_perm(self) -> int:
        return self.num_bands * self.rows_per_band

    @property
    def threshold(self) -> float:
        """Similarity where the S-curve is steepest, (1/b)^(1/r)."""
        return float((1 / self.num_bands) ** (1 / self.rows_per_band))


# ------------------------------------------------------------------------ hashing


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: every input bit flips each output bit with p=1/2."""
    h = h ^ (h >> U64(33))
    h *= U64(0xFF51AFD7ED558CCD)
    h ^= h >> U64(33)
    h *= U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> U64(33))


def hash_strings(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each string, (n,) uint64, the same in every process.

    Polynomial in the UTF-8 bytes mod 2^64, then fmix64, computed over the array's data
    buffer without making Python strings.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if n == 0:
        return np.zeros(0, U64)
    wide = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    offsets = np.frombuffer(arr.buffers()[1], np.int64 if wide else np.int32)
    offsets = offsets[arr.offset : arr.offset + n + 1].astype(np.int64)
    lens = np.diff(offsets)
    data = arr.buffers()[2]
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    raw = raw[offsets[0] : offsets[-1]].astype(U64)
    starts = offsets[:-1] - offsets[0]
    pos = np.arange(len(raw)) - np.repeat(starts, lens)  # byte position in its string
    powers = np.cumprod(np.full(max(int(lens.max()), 1), MUL))  # MUL^1, MUL^2, ...
    with np.errstate(over="ignore"):
        sums = np.concatenate([[U64(0)], np.cumsum(raw * powers[pos], dtype=U64)])
        h = sums[starts + lens] - sums[starts] + lens.astype(U64) * MUL
    return fmix64(h)


def shingle_hashes(
    tokens: np.ndarray, offsets: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of each document's n-grams of tokens, 32-bit values in uint64.

    tokens: (T,) uint64, all documents' tokens end to end; offsets: (D+1,) where document
    d's tokens start. A document with fewer than n tokens has one shingle (all of them),
    an empty one none. Returns (S,) shingle hashes in document order and (D,) counts.
    """
    lens = np.diff(offsets)
    counts = np.where(lens > 0, np.maximum(lens - n + 1, 1), 0)
    first = np.concatenate([[0], np.cumsum(counts)])[:-1]  # (D,) each document's 1st shingle
    doc = np.repeat(np.arange(len(lens)), counts)
    start = offsets[:-1][doc] + np.arange(len(doc)) - first[doc]  # (S,) its first token
    m = max(len(tokens) - n + 1, 0)
    windows = tokens[:m].copy()  # (m,) every window of n tokens: sum t[s+k] MUL^(n-1-k)
    with np.errstate(over="ignore"):
        for k in range(1, n):
            windows *= MUL
            windows += tokens[k : k + m]
        h = windows[np.minimum(start, m - 1)] if m else np.zeros(len(start), U64)
        short = np.flatnonzero((lens > 0) & (lens < n))  # one shingle of their own tokens
        at, length = offsets[:-1][short], lens[short]
        folded = tokens[at]
        for k in range(1, n - 1):
            nxt = tokens[np.minimum(at + k, len(tokens) - 1)]
            folded = np.where(k < length, folded * MUL + nxt, folded)
        h[first[short]] = folded
    return fmix64(h) >> U64(32), counts


class MinHasher:
    """Signatures of a batch of texts, (docs, num_perm) uint32.

    Permutation j is h_j(x) = ((a_j x + b_j) mod 2^64) >> 32 over 32-bit shingle hashes
    x: the multiply-add-shift family (Dietzfelbinger 1996), strongly universal like
    (a x + b) mod p, but one multiply and one add per (shingle, permutation) with no
    modulo. Since >> 32 is monotone, the minimum is taken on the 64-bit values.
    """

    def __init__(self, cfg: MinHashConfig) -> None:
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        self.a = rng.integers(0, 2**64, cfg.num_perm, dtype=U64)  # (P,)
        self.b = rng.integers(0, 2**64, cfg.num_perm, dtype=U64)  # (P,)
        # b repeated along a block: numpy adds two full arrays twice as fast as it
        # broadcasts a column
        self.b_block = np.repeat(self.b[:, None], CHUNK, axis=1)  # (P, CHUNK)

    def __call__(self, texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """-> signatures (D, P) uint32, and (D,) bool: the document had a shingle."""
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        lower = pc.utf8_lower(pc.fill_null(texts, ""))
        is_cjk = cjk_documents(lower, self.cfg.cjk_share)
        sig = np.full((len(lower), self.cfg.num_perm), MAX_U64, U64)
        has = np.zeros(len(lower), bool)
        for chars in (False, True):
            idx = np.flatnonzero(is_cjk == chars)
            if len(idx) == 0:
                continue
            part = lower.take(pa.array(idx))
            tokens, offsets = char_tokens(part) if chars else word_tokens(part)
            n = self.cfg.char_ngram if chars else self.cfg.ngram
            x, counts = shingle_hashes(tokens, offsets, n)
            sig[idx] = self.min_hash(x, counts)
            has[idx] = counts > 0
        return (sig >> U64(32)).astype(np.uint32), has

    def min_hash(self, x: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(S,) shingle hashes, (D,) shingles per document -> (D, P) minima, uint64."""
        n_perm, n_shingles = len(self.a), len(x)
        doc = np.repeat(np.arange(len(counts)), counts)  # (S,) document of each shingle
        # segments: the shingles of one document within one block, reduced in one call
        cut = np.zeros(n_shingles, bool)
        cut[::CHUNK] = True
        cut[1:] |= doc[1:] != doc[:-1]
        seg = np.flatnonzero(cut)
        bounds = np.searchsorted(seg, np.arange(0, n_shingles + CHUNK, CHUNK))
        mins = np.empty((n_perm, len(seg)), U64)  # (P, segments)
        a, block = self.a[:, None], np.empty((n_perm, CHUNK), U64)
        for i, s in enumerate(range(0, n_shingles, CHUNK)):
            xs = x[s : s + CHUNK]
            v = block[:, : len(xs)]  # (P, C): a document's shingles are contiguous in a row
            np.multiply(a, xs, out=v)  # wraps mod 2^64
            v += self.b_block[:, : len(xs)]
            lo, hi = bounds[i], bounds[i + 1]
            np.minimum.reduceat(v, seg[lo:hi] - s, axis=1, out=mins[:, lo:hi])
        sig = np.full((len(counts), n_perm), MAX_U64, U64)
        has = counts > 0
        first = np.searchsorted(seg, np.concatenate([[0], np.cumsum(counts)])[:-1][has])
        if len(first):
            sig[has] = np.minimum.reduceat(mins, first, axis=1).T  # a document's segments
        return sig


def cjk_documents(texts: pa.Array, share: float) -> np.ndarray:
    """(D,) bool: at least `share` of the text's characters are CJK, Kana or Hangul."""
    out = np.zeros(len(texts), bool)
    idx = np.flatnonzero(~pc.string_is_ascii(texts).to_numpy(zero_copy_only=False))
    if len(idx):  # the regex only where there is more than ASCII
        part = texts.take(pa.array(idx))
        cjk = pc.count_substring_regex(part, CJK).to_numpy()
        out[idx] = cjk >= share * np.maximum(pc.utf8_length(part).to_numpy(), 1)
    return out


def word_tokens(lower: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Word hashes of lowercased texts end to end (T,) uint64, and offsets (D+1,).

    Split at Unicode whitespace (a no-break space separates words as a space does), then
    punctuation is trimmed and words hashed, once per distinct word of the batch.
    """
    lists = pc.utf8_split_whitespace(lower)
    raw = pc.dictionary_encode(pc.list_flatten(lists))
    vocab = pc.utf8_trim(raw.dictionary, characters=PUNCT)
    word = raw.indices.to_numpy()
    keep = (pc.binary_length(vocab).to_numpy() > 0)[word]  # "-" or "..." is no word
    owner = pc.list_parent_indices(lists).to_numpy()[keep]
    counts = np.bincount(owner, minlength=len(lower))
    return hash_strings(vocab)[word[keep]], np.concatenate([[0], np.cumsum(counts)])


def char_tokens(lower: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Code points of lowercased texts without spaces or punctuation (T,) uint64, and
    offsets (D+1,)."""
    kept = pc.replace_substring_regex(lower, r"[\s\pP\pS]+", "")
    counts = pc.utf8_length(kept).to_numpy()
    joined = "".join(kept.to_pylist()).encode("utf-32-le")
    return np.frombuffer(joined, np.uint32).astype(U64), np.concatenate([[0], np.cumsum(counts)])


def band_hashes(sig: np.ndarray, cfg: MinHashConfig) -> np.ndarray:
    """(D, P) uint32 signatures -> (D, num_bands) uint64: one hash of each band's rows."""
    rows = sig.reshape(len(sig), cfg.num_bands, cfg.rows_per_band).astype(U64)
    h = np.zeros(rows.shape[:2], U64)
    with np.errstate(over="ignore"):
        for k in range(cfg.rows_per_band):
            h = h * MUL + rows[:, :, k]
    return fmix64(h)


# ------------------------------------------------------------------------ Ray steps


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


def unique_edges(src: Any, dst: Any, **extra: Any) -> pa.Table:
    t = pa.table({"src": src, "dst": dst, **extra})
    t = t.filter(pc.not_equal(t["src"], t["dst"]))  # a repeated id is not an edge
    return t.group_by(["src", "dst", *extra]).aggregate([]) if t.num_rows else t


def cat(*parts: Any) -> pa.ChunkedArray:
    """Arrays or chunked arrays of one type, end to end (no copy)."""
    chunks = [c for p in parts for c in (p.chunks if isinstance(p, pa.ChunkedArray) else [p])]
    return pa.chunked_array(chunks, type=parts[0].type)


def both_ways(edges: pa.Table) -> pa.Table:
    """Edges -> (node, nbr) from both ends: grouped by node, a node meets all neighbours."""
    return pa.table(
        {"node": cat(edges["dst"], edges["src"]), "nbr": cat(edges["src"], edges["dst"])}
    )


def from_larger(edges: pa.Table) -> pa.Table:
    """Edges -> (node, nbr) from the larger end: a node meets its smaller neighbours."""
    return pa.table({"node": edges["dst"], "nbr": edges["src"]})


def neighbour_min(t: pa.Table) -> tuple[Any, pa.Table]:
    """(node, nbr) rows -> each row's smallest neighbour of its node, and (node, nbr_min)."""
    mins = t.group_by("node").aggregate([("nbr", "min")])
    return mins["nbr_min"].take(pc.index_in(t["node"], value_set=mins["node"])), mins


def large_star(group: pa.Table) -> pa.Table:
    """Each node u links its larger neighbours to m = min(u, neighbours of u).
    `changed` marks links that moved (m != u)."""
    t = group.group_by(["node", "nbr"]).aggregate([])
    m = pc.min_element_wise(t["node"], neighbour_min(t)[0])
    larger = pc.greater(t["nbr"], t["node"])
    src, node = pc.filter(m, larger), pc.filter(t["node"], larger)
    return unique_edges(src, pc.filter(t["nbr"], larger), changed=pc.not_equal(src, node))


def small_star(group: pa.Table) -> pa.Table:
    """Each node u links itself and its smaller neighbours to m = min(neighbours of u).
    `changed` marks the links between two former neighbours of u."""
    t = group.group_by(["node", "nbr"]).aggregate([])  # every nbr < node
    m, mins = neighbour_min(t)
    moved = pc.not_equal(t["nbr"], m)
    n_moved = pc.sum(moved).as_py() or 0
    return unique_edges(
        cat(pc.filter(m, moved), mins["nbr_min"]),  # m - each other smaller neighbour of u
        cat(pc.filter(t["nbr"], moved), mins["node"]),  # m - u
        changed=np.arange(n_moved + mins.num_rows) < n_moved,
    )


def component_labels(group: pa.Table) -> pa.Table:
    """Star edges (root, member) -> (id=member, root, size of the component)."""
    t = group.group_by(["src", "dst"]).aggregate([])
    sizes = t.group_by("src").aggregate([("dst", "count")])
    size = sizes["dst_count"].take(pc.index_in(t["src"], value_set=sizes["src"]))
    return pa.table({"id": t["dst"], ROOT: t["src"], SIZE: pc.add(size, 1)})


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


# ------------------------------------------------------------------------ driver


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


def connected_components(edges: Any, cfg: MinHashConfig) -> Any:
    """Edges (src < dst) -> star edges (root, member), root the component's smallest id.

    Alternates large-star and small-star (Kiveris et al., "Connected Components in
    MapReduce and Beyond", 2014), each one groupby of the edge list by node. Both keep
    connectivity; when neither moves a link, every component is a star around its
    minimum. The driver reads one count per step.
    """
    for round_ in range(1, cfg.max_cc_iterations + 1):
        edges = grouped(edges, "node", large_star, cfg, prepare=both_ways, scale=2).materialize()
        moved = edges.sum("changed") or 0
        edges = grouped(edges, "node", small_star, cfg, prepare=from_larger).materialize()
        moved += edges.sum("changed") or 0
        log.info("minhash components round %d: %d links moved", round_, moved)
        if moved == 0:
            return edges
    log.warning(
        "minhash components did not converge in %d rounds: some near duplicates stay kept",
        cfg.max_cc_iterations,
    )
    return edges


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
