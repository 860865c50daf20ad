"""64-bit hashes, the same in every process: MurmurHash3's finalizer, and string hashes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

U64 = np.uint64
MUL = U64(0x9E3779B97F4A7C15)  # odd: combines token hashes position by position


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
