"""Read input files into rows with Ray Data, quarantining what cannot be read.

Every input record becomes exactly one row. A JSONL line that is not JSON, bytes that
are not UTF-8, a record over the size limit: each is a `quarantined` row carrying the
error, the file and the line, never an exception that stops the job or a silent skip.
"""

from __future__ import annotations

import fnmatch
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from lmforge.pipelines.records import QUARANTINED, conform, empty_row, to_table
from lmforge.platform import storage

JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")
TEXT_SUFFIXES = (".txt", ".txt.gz", ".md")
PARQUET_SUFFIXES = (".parquet",)
ALL_SUFFIXES = JSON_SUFFIXES + TEXT_SUFFIXES + PARQUET_SUFFIXES
RAW_PREVIEW = 2000  # characters of an unreadable record kept in `raw`


def expand(inputs: list[str]) -> list[str]:
    """Files behind each input (a file, a folder searched recursively, or a glob),
    sorted, so the same inputs always give the same row order and ids."""
    files: list[str] = []
    for uri in inputs:
        fs, path = storage.filesystem(uri)
        prefix = uri[: len(uri) - len(path)] if storage.is_remote(uri) else ""
        if any(c in path for c in "*?["):
            base = path[: min(path.find(c) for c in "*?[" if c in path)].rsplit("/", 1)[0]
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
            found = [i.path for i in infos if i.is_file and fnmatch.fnmatch(i.path, path)]
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise FileNotFoundError(f"input not found: {uri}")
            if info.type == pafs.FileType.File:
                found = [path]
            else:
                infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
                found = [i.path for i in infos if i.is_file and i.path.endswith(ALL_SUFFIXES)]
                # a stage output folder: read only its kept rows
                if storage.read_manifest(uri) is not None:
                    found = [f for f in found if "/kept/" in f and f.endswith(".parquet")]
        files += [prefix + f for f in sorted(found)]
    if not files and inputs:
        raise FileNotFoundError(f"no readable files in {', '.join(inputs)}")
    return files


def read_rows(
    inputs: list[str], *, id_field: str, max_record_bytes: int, max_builtin_docs: int = 4000
) -> Any:
    """A Ray Dataset of ROW_SCHEMA rows with `raw` JSON text, one per input record."""
    import ray.data

    from lmforge.pipelines.builtin_corpus import builtin_bytes

    parts: list[Any] = []
    for uri in [u for u in inputs if u.startswith("builtin:")]:
        # made on the driver and handed over: no file that other nodes would lack
        name, data = builtin_bytes(uri.removeprefix("builtin:"), max_builtin_docs)
        rows = list(parse_file(f"builtin/{name}", data, id_field, max_record_bytes))
        parts.append(ray.data.from_items(rows))
    files = expand([u for u in inputs if not u.startswith("builtin:")])
    parquet = [f for f in files if f.endswith(PARQUET_SUFFIXES)]
    other = [f for f in files if not f.endswith(PARQUET_SUFFIXES)]
    if other:
        ds = ray.data.read_binary_files(other, include_paths=True, ignore_missing_paths=False)
        parts.append(
            ds.flat_map(lambda r: parse_file(r["path"], r["bytes"], id_field, max_record_bytes))
        )
    if parquet:
        ds = ray.data.read_parquet(parquet, include_paths=True)
        parts.append(
            ds.map_batches(
                lambda t: parquet_rows(t, id_field), batch_format="pyarrow", zero_copy_batch=True
            )
        )
    ds = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    # one schema for every block, whatever columns a block happened to leave null
    return ds.map_batches(conform, batch_format="pyarrow", zero_copy_batch=True)


def parse_file(
    path: str, data: bytes, id_field: str, max_record_bytes: int
) -> Iterator[dict[str, Any]]:
    """Rows of one file. Format by suffix: JSONL, a JSON list, or one text document."""
    name = path.rsplit("/", 1)[-1]
    # Ray's binary reader already inflates .gz files it reads; builtin bytes are plain
    if path.endswith(".gz") and data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            yield _bad(path, 0, f"cannot decompress: {e}", data[:RAW_PREVIEW])
            return
    name = name.removesuffix(".gz")
    if name.endswith(TEXT_SUFFIXES):
        yield from _text_file(path, data, max_record_bytes)
    elif name.endswith(".json") and data.lstrip()[:1] == b"[":
        yield from _json_list(path, data, id_field, max_record_bytes)
    else:
        yield from _jsonl(path, data, id_field, max_record_bytes)


def _jsonl(path: str, data: bytes, id_field: str, limit: int) -> Iterator[dict[str, Any]]:
    for n, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines are layout, not records
        if len(line) > limit:
            yield _bad(path, n, f"record of {len(line)} bytes exceeds {limit}", line)
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield _bad(path, n, f"invalid UTF-8 at byte {e.start}", line)
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            yield _bad(path, n, f"invalid JSON: {e.msg} at column {e.colno}", line)
            continue
        yield _record_row(path, n, record, text, id_field)


def _json_list(path: str, data: bytes, id_field: str, limit: int) -> Iterator[dict[str, Any]]:
    try:
        records = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        yield _bad(path, 0, f"unreadable JSON file: {e}", data[:RAW_PREVIEW])
        return
    for n, record in enumerate(records, start=1):
        text = json.dumps(record, ensure_ascii=False)
        if len(text.encode("utf-8")) > limit:
            yield _bad(path, n, f"record of {len(text)} characters exceeds {limit}", text)
            continue
        yield _record_row(path, n, record, text, id_field)


def _text_file(path: str, data: bytes, limit: int) -> Iterator[dict[str, Any]]:
    if len(data) > limit:
        yield _bad(path, 1, f"document of {len(data)} bytes exceeds {limit}", data)
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        yield _bad(path, 1, f"invalid UTF-8 at byte {e.start}", data)
        return
    name = PurePosixPath(path).name
    raw = json.dumps({"text": text, "id": name}, ensure_ascii=False)
    yield empty_row(id=name, file=path, line=1, raw=raw, source=name)


def parquet_rows(table: pa.Table, id_field: str) -> pa.Table:
    """Parquet rows -> ROW_SCHEMA rows whose `raw` is the row as JSON."""
    rows = []
    paths = table.column("path").to_pylist() if "path" in table.column_names else None
    records = table.drop_columns(["path"]) if paths else table
    for i, rec in enumerate(records.to_pylist()):
        file = paths[i] if paths else "parquet"
        text = json.dumps(rec, ensure_ascii=False, default=str)
        rows.append(_record_row(file, None, rec, text, id_field))
    return to_table(rows)


def _record_row(
    path: str, line: int | None, record: Any, text: str, id_field: str
) -> dict[str, Any]:
    name = PurePosixPath(path).name
    rid = record.get(id_field) if isinstance(record, dict) else None
    rid = str(rid) if isinstance(rid, (str, int)) and str(rid) else f"{name}:{line}"
    source = record.get("source") if isinstance(record, dict) else None
    return empty_row(
        id=rid,
        file=path,
        line=line,
        raw=text,
        source=source if isinstance(source, str) else name,
    )


def _bad(path: str, line: int, error: str, raw: bytes | str) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raw = raw[:RAW_PREVIEW].decode("utf-8", errors="backslashreplace")
    name = PurePosixPath(path).name
    return empty_row(
        id=f"{name}:{line}",
        file=path,
        line=line,
        raw=raw[:RAW_PREVIEW],
        fate=QUARANTINED,
        step="read",
        error=error,
    )
