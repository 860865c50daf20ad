"""MinHash signatures of a batch of texts, computed with numpy.

Shingles are hashed once, then all permutations are applied to all shingles of the batch
as one (perms, shingles) array that is min-reduced per document. A mostly CJK, Kana or
Hangul document is shingled by characters, others by words.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmforge.pipelines.minhash.config import MinHashConfig
from lmforge.pipelines.minhash.hashing import MUL, U64, fmix64, hash_strings
from lmforge.pipelines.words import TRIMMED_PUNCTUATION
from lmforge.pipelines.writing_systems import CJK

MAX_U64 = U64(2**64 - 1)
CHUNK = 1024  # shingles per (perms, shingles) block: 112 x 1024 x 8 B fits in L2


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
    vocab = pc.utf8_trim(raw.dictionary, characters=TRIMMED_PUNCTUATION)
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
