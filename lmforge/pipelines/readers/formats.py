"""One file's bytes -> rows, every record one row, a record that cannot be read quarantined.

Formats by suffix: JSONL or a JSON list, CSV with a header row, text (one document per
file), each plain, `.gz` or `.zst`; Parquet; and Hugging Face datasets: a folder written
by `save_to_disk` (found by its `state.json`), also as `hf:PATH[:split]`, whose Arrow
files are read in Ray tasks, or `hf:NAME[:split]` for a dataset on the Hub.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
import zlib
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa

from lmforge.pipelines.records import QUARANTINED, empty_row, to_table


def _compressed(*suffixes: str) -> tuple[str, ...]:
    return tuple(s + c for s in suffixes for c in ("", ".gz", ".zst"))


JSON_SUFFIXES = _compressed(".jsonl", ".json", ".ndjson")
TEXT_SUFFIXES = _compressed(".txt", ".md")
CSV_SUFFIXES = _compressed(".csv")
PARQUET_SUFFIXES = (".parquet",)
ALL_SUFFIXES = JSON_SUFFIXES + TEXT_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES
ARROW_SUFFIX = ".arrow"  # read only as the data files of a saved dataset
RAW_PREVIEW = 2000  # characters of an unreadable record kept in `raw`


def parse_file(
    path: str, data: bytes, id_field: str, max_record_bytes: int
) -> Iterator[dict[str, Any]]:
    """Rows of one file. Format by suffix: JSONL, a JSON list, CSV, or one text
    document; `.gz` and `.zst` are decompressed first."""
    name = path.rsplit("/", 1)[-1]
    try:
        # a .gz name over plain bytes is read as plain: a transport may have inflated it
        if name.endswith(".gz") and data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        elif name.endswith(".zst"):
            data = _unzstd(data)
    except (OSError, EOFError, zlib.error) as e:
        yield _bad(path, 0, f"cannot decompress: {e}", data[:RAW_PREVIEW])
        return
    name = name.removesuffix(".gz").removesuffix(".zst")
    if name.endswith(TEXT_SUFFIXES):
        yield from _text_file(path, data, max_record_bytes)
    elif name.endswith(".csv"):
        yield from _csv(path, data, id_field, max_record_bytes)
    elif name.endswith(".json") and data.lstrip()[:1] == b"[":
        yield from _json_list(path, data, id_field, max_record_bytes)
    else:
        yield from _jsonl(path, data, id_field, max_record_bytes)


def _unzstd(data: bytes) -> bytes:
    import zstandard

    try:
        # a stream reader: frames written by streaming compressors carry no size
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
            return reader.read()
    except zstandard.ZstdError as e:
        raise OSError(str(e)) from e


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


def _csv(path: str, data: bytes, id_field: str, limit: int) -> Iterator[dict[str, Any]]:
    """One record per row after the header, as {column: string}. `line` is the row's
    first line (a quoted field may span several). A bad header quarantines the file."""
    # undecodable bytes survive as lone surrogates, so one bad row spoils only itself
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    lines = list(io.StringIO(text, newline=""))  # the lines the reader counts
    csv.field_size_limit(max(csv.field_size_limit(), min(limit, sys.maxsize)))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            row, error = next(reader), None
        except StopIteration:
            return
        except csv.Error as e:  # the reader resumes at the next line
            row, error = None, f"malformed CSV: {e}"
        raw = "".join(lines[start - 1 : reader.line_num]).rstrip("\r\n")
        if row == []:
            continue  # blank lines are layout, not records
        if header is None:
            if row is None or _undecodable(raw) or len(set(row)) != len(row):
                error = error or "bad UTF-8 or repeated column names"
                yield _bad(path, start, f"unreadable CSV header: {error}", _encode(raw))
                return
            header = row
            continue
        if row is not None:
            error = _csv_row_error(row, header, raw, limit)
            if error is None:
                record = dict(zip(header, row, strict=True))
                as_json = json.dumps(record, ensure_ascii=False)
                yield _record_row(path, start, record, as_json, id_field)
                continue
        yield _bad(path, start, str(error), _encode(raw))


def _csv_row_error(row: list[str], header: list[str], raw: str, limit: int) -> str | None:
    if len(_encode(raw)) > limit:
        return f"record of {len(_encode(raw))} bytes exceeds {limit}"
    if len(row) != len(header):
        return f"malformed CSV: row has {len(row)} fields, the header {len(header)}"
    if _undecodable(raw):
        return "invalid UTF-8"
    return None


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _undecodable(text: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in text)


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


def arrow_rows(f: pa.NativeFile, path: str, id_field: str, limit: int) -> Iterator[dict[str, Any]]:
    """Rows of an Arrow IPC stream (a `save_to_disk` data file), batch by batch; `line`
    is the 1-based row number. A corrupt stream quarantines the rest of the file."""
    n = 0
    try:
        for batch in pa.ipc.open_stream(f):
            for record in batch.to_pylist():
                n += 1
                text = json.dumps(record, ensure_ascii=False, default=str)
                if len(text) > limit:
                    yield _bad(path, n, f"record of {len(text)} characters exceeds {limit}", text)
                else:
                    yield _record_row(path, n, record, text, id_field)
    except pa.ArrowInvalid as e:
        yield _bad(path, n + 1, f"unreadable Arrow stream after row {n}: {e}", "")


def parquet_rows(
    table: pa.Table, id_field: str, prefix: str = "", file: str | None = None
) -> pa.Table:
    """Parquet (or Hub) rows -> ROW_SCHEMA rows whose `raw` is the row as JSON. The file
    is `prefix` + the `path` column, else `file`."""
    rows = []
    paths = table.column("path").to_pylist() if "path" in table.column_names else None
    records = table.drop_columns(["path"]) if paths else table
    for i, rec in enumerate(records.to_pylist()):
        name = prefix + paths[i] if paths else file or "parquet"
        text = json.dumps(rec, ensure_ascii=False, default=str)
        rows.append(_record_row(name, None, rec, text, id_field))
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
