"""64-bit keys of token windows, and the index that finds them in a document.

The index holds 64-bit keys of the n-grams, sorted, one array per mode with all lengths
together, and a Bloom filter in front: about 18 bytes an n-gram, 17 MB for GSM8K,
HumanEval and MMLU (946k n-grams). The keys do not depend on the process (no `hash()`
seed), so the filter may be pickled to workers; better, construct it in each actor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_MULT = 0x9E3779B97F4A7C15  # odd, so the polynomial hash mixes every token


class WindowHasher:
    """64-bit keys of token windows: sum of h[i+j] * P**(m-1-j) over the window, mod 2**64,
    h a token's blake2b hash. With prefix sums of h[j] * P**-j, every window of every
    length costs two vector operations (P is odd, so it has an inverse mod 2**64)."""

    CACHED_POWERS = 1 << 16  # tokens: documents longer than this compute their own

    def __init__(self) -> None:
        self.cache: dict[str, int] = {}
        self.up, self.down = _powers(1024)

    def tokens(self, tokens: list[str]) -> np.ndarray:
        """(T,) uint64 hashes of the tokens."""
        if len(self.cache) > 1_000_000:  # a long-running worker sees unbounded vocabulary
            self.cache.clear()
        out = list(map(self.cache.get, tokens))  # the loop in C; new tokens are rarer
        if None in out:
            for i, h in enumerate(out):
                if h is None:
                    digest = hashlib.blake2b(tokens[i].encode(), digest_size=8).digest()
                    out[i] = self.cache[tokens[i]] = int.from_bytes(digest, "little")
        return np.array(out, dtype=np.uint64)

    def windows(self, hashes: np.ndarray, lengths: Sequence[int]) -> list[np.ndarray]:
        """(T,) token hashes -> for each m in `lengths` (at most T), the (T-m+1,) keys of
        every m-token window, in order of position."""
        n = len(hashes)
        if n > len(self.up):
            up, down = _powers(n)
            if n <= self.CACHED_POWERS:
                self.up, self.down = up, down
        else:
            up, down = self.up, self.down
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(hashes * down[:n], out=prefix[1:])  # wraps mod 2**64, as intended
        return [(prefix[m:] - prefix[:-m]) * up[m - 1 : n] for m in lengths]


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(P**k, P**-k) mod 2**64 for k in 0..n-1."""
    up, down = np.ones(n, dtype=np.uint64), np.ones(n, dtype=np.uint64)
    np.cumprod(np.full(n - 1, _MULT, dtype=np.uint64), out=up[1:])
    np.cumprod(np.full(n - 1, pow(_MULT, -1, 1 << 64), dtype=np.uint64), out=down[1:])
    return up, down


class TokenBatch:
    """Token hashes of many texts end to end, so one numpy call keys all their windows."""

    def __init__(self) -> None:
        self.hashes: list[np.ndarray] = []
        self.spans: list[tuple[int, int, int]] = []  # (offset, length, item)
        self.size = 0

    def add(self, hashes: np.ndarray, item: int) -> None:
        self.spans.append((self.size, len(hashes), item))
        self.hashes.append(hashes)
        self.size += len(hashes)

    def windows(self, m: int, hasher: WindowHasher) -> tuple[np.ndarray, np.ndarray]:
        """(keys, item of each) of the m-token windows that lie inside one text."""
        offset, length, item = np.array(self.spans, dtype=np.int64).T
        count = np.maximum(length - m + 1, 0)  # windows per text
        first_of_text = np.repeat(np.cumsum(count) - count, count)
        starts = np.repeat(offset, count) + np.arange(count.sum()) - first_of_text
        (keys,) = hasher.windows(np.concatenate(self.hashes), [m])
        return keys[starts], np.repeat(item, count)


@dataclass
class NgramIndex:
    """The n-grams of one mode (word or char), all lengths together, sorted by key, and a
    one-hash Bloom filter over them: most windows of a clean document miss it, and it is
    small enough to stay in cache, where a binary search over all keys is not."""

    keys: np.ndarray  # (K,) uint64
    items: np.ndarray  # (K,) int32: the item the n-gram belongs to
    sizes: np.ndarray  # (K,) int16: its length in tokens
    lengths: list[int]  # the distinct lengths, ascending
    bloom: np.ndarray  # (2**bits / 8,) uint8, about 32 bits a key: ~3% pass by chance
    shift: int  # 64 - bits: a key's top bits choose its Bloom bit

    @classmethod
    def build(cls, by_length: dict[int, TokenBatch], hasher: WindowHasher) -> NgramIndex:
        lengths = sorted(by_length)
        parts = [by_length[m].windows(m, hasher) for m in lengths]
        keys = np.concatenate([k for k, _ in parts])
        items = np.concatenate([i for _, i in parts]).astype(np.int32)
        sizes = np.repeat(np.array(lengths, dtype=np.int16), [len(k) for k, _ in parts])
        # np.unique's first occurrence: an n-gram belongs to the first item that has it
        keys, first = np.unique(keys, return_index=True)
        bits = max(16, int(np.ceil(np.log2(32 * len(keys)))))
        bloom = np.zeros(1 << (bits - 3), dtype=np.uint8)
        top = (keys >> np.uint64(64 - bits)).astype(np.intp)
        np.bitwise_or.at(bloom, top >> 3, np.left_shift(1, top & 7).astype(np.uint8))
        return cls(keys, items[first], sizes[first], lengths, bloom, 64 - bits)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which of `keys` are in the index, their rows in it)."""
        top = (keys >> np.uint64(self.shift)).astype(np.intp)
        maybe = np.flatnonzero((self.bloom[top >> 3] >> (top & 7).astype(np.uint8)) & 1)
        at = np.minimum(np.searchsorted(self.keys, keys[maybe]), len(self.keys) - 1)
        found = self.keys[at] == keys[maybe]
        return maybe[found], at[found]
