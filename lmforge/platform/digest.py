"""Content digests of stage outputs and inputs: the same content, the same digest.

Every digest is 32 hex characters (128 bits; MLflow stores dataset digests of at most
36). What is hashed:

- rows (a data stage's kept rows, token shards): a *multiset* hash, the sum mod 2**128 of
  one blake2b hash per row, with the row count. Ray Data writes files with random names,
  in nondeterministic order and split: a sum does not care, and it streams (per batch, in
  any order, on any worker; the pieces add up on the driver).
- files (a tokenizer, an exported model): each file's relative path, size and content,
  by path.
- raw inputs without a manifest: relative path, size and modification time of each file
  (no content: a raw corpus can be terabytes). A file touched or copied gets a new
  digest, so a stage reading it reruns rather than trusting stale output; `builtin:` and
  `hf:` inputs are digested by their name alone.
- a recipe section: its canonical JSON.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from lmforge.platform import storage

BITS = 128
MOD = 1 << BITS
# a batch's 128-bit sum travels in 8 pieces of 16 bits, each summed over the batches on
# its own as an int64 (Ray Data tally rows): exact for up to 2**47 batches
PIECE_BITS = 16
PIECES = BITS // PIECE_BITS
CHUNK = 8 << 20  # bytes read at a time when hashing a file


def _hex(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=BITS // 8).hexdigest()


def to_pieces(total: int) -> list[int]:
    """A 128-bit sum as PIECES integers of PIECE_BITS bits (lowest first)."""
    mask = (1 << PIECE_BITS) - 1
    return [(total >> (PIECE_BITS * i)) & mask for i in range(PIECES)]


def from_pieces(pieces: Iterable[int]) -> int:
    """The sum mod 2**128 of pieces summed separately (each may exceed PIECE_BITS)."""
    return sum(int(p) << (PIECE_BITS * i) for i, p in enumerate(pieces)) % MOD


def of_rows(kind: str, count: int, total: int) -> str:
    """The digest of `count` rows whose hashes add up to `total` (mod 2**128)."""
    return _hex(f"{kind}:{count}:{total % MOD:032x}".encode())


def of_config(config: Mapping[str, Any]) -> str:
    """The digest of a recipe section: its JSON with sorted keys, no whitespace."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return _hex(text.encode("utf-8"))


def combine(parts: Mapping[str, str | None]) -> str:
    """One digest for named digests (the splits and tokenizer of a tokenize output)."""
    return of_config(dict(parts))


def record_hashes(table: pa.Table | pa.RecordBatch) -> Iterator[int]:
    """One hash per row of an Arrow table, from its column names and values.

    List-of-number columns (token ids) are hashed from their buffers; other columns from
    each value's JSON text."""
    names = table.schema.names
    columns = [_cells(table.column(i)) for i in range(table.num_columns)]
    for i in range(table.num_rows):
        h = hashlib.blake2b(digest_size=BITS // 8)
        for name, cells in zip(names, columns, strict=True):
            cell = cells[i]
            h.update(f"{name}:{len(cell)}:".encode())
            h.update(cell)
        yield int.from_bytes(h.digest(), "big")


def _cells(column: pa.Array | pa.ChunkedArray) -> list[bytes]:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if (
        pa.types.is_list(arr.type)
        and (pa.types.is_integer(arr.type.value_type) or pa.types.is_floating(arr.type.value_type))
        and arr.null_count == 0
        and arr.values.null_count == 0
    ):
        offsets = arr.offsets.to_numpy()
        values = arr.values.to_numpy()
        return [values[a:b].tobytes() for a, b in itertools.pairwise(offsets)]
    return [
        json.dumps(v, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
        for v in arr.to_pylist()
    ]


def parquet_rows(folder: str) -> tuple[int, int]:
    """(rows, sum of their hashes) of the Parquet files under `folder`, streamed one
    batch at a time (local or a URI)."""
    import pyarrow.dataset as pads

    fs, root = storage.filesystem(folder)
    files = sorted(i.path for i in _files(fs, root) if i.path.endswith(".parquet"))
    count, total = 0, 0
    if files:
        for batch in pads.dataset(files, format="parquet", filesystem=fs).to_batches():
            count += batch.num_rows
            total = (total + sum(record_hashes(batch))) % MOD
    return count, total


def of_files(folder: str) -> str:
    """The digest of the files under `folder`: relative path, size and content, by path."""
    fs, root = storage.filesystem(folder)
    h = hashlib.blake2b(digest_size=BITS // 8)
    for info in sorted(_files(fs, root), key=lambda i: i.path):
        content = hashlib.blake2b(digest_size=BITS // 8)
        with fs.open_input_stream(info.path) as f:
            while chunk := f.read(CHUNK):
                content.update(chunk)
        rel = info.path[len(root) :].lstrip("/")
        h.update(f"{rel}\0{info.size}\0{content.hexdigest()}\n".encode())
    return h.hexdigest()


def of_listing(uri: str) -> str:
    """The digest of a raw input from its listing: each file's path relative to the
    input, size and modification time (a glob matches file names in its folder)."""
    if uri.startswith(("builtin:", "hf:")):
        return _hex(f"name:{uri}".encode())
    fs, path = storage.filesystem(uri)
    if any(c in path for c in "*?["):  # as the readers expand a glob
        base = path[: min(path.find(c) for c in "*?[" if c in path)].rsplit("/", 1)[0]
        files = [i for i in _files(fs, base) if fnmatch.fnmatch(i.path, path)]
    else:
        base = path
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(uri)
        files = [info] if info.type == pafs.FileType.File else _files(fs, path)
    lines = []
    for f in sorted(files, key=lambda i: i.path):
        rel = f.path[len(base) :].lstrip("/") or f.base_name
        lines.append(f"{rel}\0{f.size}\0{f.mtime_ns}\n")
    return _hex("".join(lines).encode("utf-8"))


def of_input(uri: str) -> str | None:
    """A stage input's digest: the `digest` of its manifest (a stage output), else one
    from its listing (a raw input); None when it cannot be read from here (a URI
    without credentials, a registry model)."""
    if uri.startswith("models:/"):
        return None
    manifest = storage.read_manifest(uri) if not uri.startswith(("builtin:", "hf:")) else None
    if manifest is not None:
        value = manifest.get("digest")
        return str(value) if value else None
    try:
        return of_listing(uri)
    except (OSError, ValueError):
        return None


def _files(fs: pafs.FileSystem, root: str) -> list[pafs.FileInfo]:
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        return []
    return [i for i in fs.get_file_info(pafs.FileSelector(root, recursive=True)) if i.is_file]
