"""Read input files into rows with Ray Data, quarantining what cannot be read.

Every input record becomes exactly one row. A JSONL line that is not JSON, bytes that
are not UTF-8, a CSV row with the wrong number of fields, a record over the size limit:
each is a `quarantined` row carrying the error, the file and the line, never an exception
that stops the job or a silent skip.

Inputs: a file, a folder (searched recursively), or a glob; local, `s3://` or `gs://`.
Formats by suffix: JSONL or a JSON list, CSV with a header row, text (one document per
file), each plain, `.gz` or `.zst`; Parquet; and Hugging Face datasets: a folder written
by `save_to_disk` (found by its `state.json`), also as `hf:PATH[:split]`, whose Arrow
files are read in Ray tasks, or `hf:NAME[:split]` for a dataset on the Hub.

Object stores take their credentials and endpoint from the usual variables
(AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL for an S3-compatible server, ...) or from the URI's
query, as pyarrow's `FileSystem.from_uri` reads it:
`s3://bucket/data/*.jsonl?endpoint_override=127.0.0.1:9000&scheme=http`. Rows name
their file without query or user info (`s3://bucket/data/a.jsonl`).
"""

from __future__ import annotations

import csv
import fnmatch
import gzip
import io
import json
import posixpath
import re
import sys
import zlib
from collections.abc import Iterable, Iterator
from functools import cache, partial
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from lmforge.pipelines.records import QUARANTINED, conform, empty_row, to_table
from lmforge.platform import storage


def _compressed(*suffixes: str) -> tuple[str, ...]:
    return tuple(s + c for s in suffixes for c in ("", ".gz", ".zst"))


JSON_SUFFIXES = _compressed(".jsonl", ".json", ".ndjson")
TEXT_SUFFIXES = _compressed(".txt", ".md")
CSV_SUFFIXES = _compressed(".csv")
PARQUET_SUFFIXES = (".parquet",)
ALL_SUFFIXES = JSON_SUFFIXES + TEXT_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES
ARROW_SUFFIX = ".arrow"  # read only as the data files of a saved dataset
HF_STATE, HF_INFO, HF_DICT = "state.json", "dataset_info.json", "dataset_dict.json"
RAW_PREVIEW = 2000  # characters of an unreadable record kept in `raw`
BLOCK_ROWS = 1024  # rows per block a read task hands on


# ------------------------------------------------------------------------------ files


def expand(inputs: list[str]) -> list[str]:
    """Files behind each input (a file, a folder searched recursively, a glob, or
    `hf:PATH[:split]` of a saved dataset), sorted, so the same inputs always give the
    same row order and ids. Remote files keep their input's query, so each can be
    opened again on its own."""
    files: list[str] = []
    for uri in inputs:
        split = None
        if uri.startswith("hf:"):
            uri, split = split_hf(uri)
        fs, path = storage.filesystem(uri)
        if any(c in path for c in "*?["):
            base = path[: min(path.find(c) for c in "*?[" if c in path)].rsplit("/", 1)[0]
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
            found = [i.path for i in infos if i.is_file and fnmatch.fnmatch(i.path, path)]
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise FileNotFoundError(f"input not found: {public_uri(uri)}")
            found = [path] if info.type == pafs.FileType.File else _folder_files(fs, path)
        if split is not None:
            found = [f for f in found if f.startswith(f"{path}/{split}/")]
            if not found:
                raise FileNotFoundError(f"no split {split!r} in {public_uri(uri)}")
        files += [_file_uri(uri, f) for f in sorted(found)]
    if not files and inputs:
        raise FileNotFoundError(f"no readable files in {', '.join(map(public_uri, inputs))}")
    return files


def _folder_files(fs: pafs.FileSystem, folder: str) -> list[str]:
    """Readable files under `folder`: by suffix, except hidden and `_private` ones; a
    stage output's kept Parquet only; a saved dataset's Arrow data files only."""
    infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True))
    files = [i.path for i in infos if i.is_file]
    if f"{folder}/{storage.MANIFEST}" in files and _read_json(fs, f"{folder}/{storage.MANIFEST}"):
        return [f for f in files if "/kept/" in f and f.endswith(".parquet")]
    saved = {posixpath.dirname(f) for f in files if f.endswith(f"/{HF_STATE}")}
    saved &= {posixpath.dirname(f) for f in files if f.endswith(f"/{HF_INFO}")}
    found = []
    for f in files:
        relative = f[len(folder) + 1 :].split("/")
        if any(part.startswith((".", "_")) for part in relative):
            continue  # .git, _progress, _SUCCESS: not inputs
        if any(f.startswith(d + "/") for d in saved) or relative[-1] == HF_DICT:
            continue
        if f.endswith(ALL_SUFFIXES):
            found.append(f)
    for d in saved:
        state = _read_json(fs, f"{d}/{HF_STATE}") or {}
        found += [f"{d}/{entry['filename']}" for entry in state.get("_data_files", [])]
    return found


def _read_json(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
    try:
        with fs.open_input_stream(path) as f:
            data = json.loads(bytes(f.read()).decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def split_hf(uri: str) -> tuple[str, str | None]:
    """`hf:PATH_OR_NAME[:split]` -> (PATH_OR_NAME, split or None). A URI's query stays
    with the path: `hf:s3://b/ds:train?endpoint_override=h:9000`."""
    rest, sep, query = uri.removeprefix("hf:").partition("?")
    head, colon, tail = rest.rpartition(":")
    if colon and head and re.fullmatch(r"[\w.-]+", tail):
        return head + sep + query, tail
    return rest + sep + query, None


def _file_uri(input_uri: str, path: str) -> str:
    """The URI of `path`, a file in the filesystem of `input_uri`, with that input's
    user info and query (how to reach the store)."""
    if not storage.is_remote(input_uri):
        return path
    parts = urlsplit(input_uri)
    user = parts.netloc.rpartition("@")[0]
    return f"{parts.scheme}://{user + '@' if user else ''}{path}" + (
        f"?{parts.query}" if parts.query else ""
    )


def public_uri(uri: str) -> str:
    """A file's URI without user info or query: the name rows and markers use."""
    if not storage.is_remote(uri):
        return uri
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _by_filesystem(files: list[str]) -> list[tuple[str, pafs.FileSystem | None, list[str]]]:
    """Files grouped by the store that holds them: (prefix, filesystem, paths in it).
    prefix + path is the file's public URI (the prefix is "" for local files, whose
    filesystem is left to Ray)."""
    groups: dict[tuple[str, str], tuple[str, pafs.FileSystem | None, list[str]]] = {}
    for uri in files:
        if not storage.is_remote(uri):
            groups.setdefault(("", ""), ("", None, []))[2].append(uri)
            continue
        parts = urlsplit(uri)
        key = (f"{parts.scheme}://{parts.netloc}", parts.query)
        if key not in groups:  # one filesystem per bucket and settings, not per file
            root = f"{key[0]}/" + (f"?{parts.query}" if parts.query else "")
            groups[key] = (f"{parts.scheme}://", storage.filesystem(root)[0], [])
        groups[key][2].append(parts.netloc.rpartition("@")[2] + parts.path)
    return list(groups.values())


# ------------------------------------------------------------------------------ Ray


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
    hub = [u for u in inputs if u.startswith("hf:") and not storage.exists(split_hf(u)[0])]
    parts += [_hub_rows(u, id_field) for u in hub]
    files = expand([u for u in inputs if not u.startswith("builtin:") and u not in hub])
    for prefix, fs, paths in _by_filesystem(files):
        parquet = [p for p in paths if p.endswith(PARQUET_SUFFIXES)]
        other = [p for p in paths if not p.endswith(PARQUET_SUFFIXES)]
        if other:
            source = record_files()(
                other,
                filesystem=fs,
                prefix=prefix,
                id_field=id_field,
                max_record_bytes=max_record_bytes,
            )
            parts.append(ray.data.read_datasource(source))
        if parquet:
            ds = ray.data.read_parquet(parquet, filesystem=fs, include_paths=True)
            rows_of = partial(parquet_rows, id_field=id_field, prefix=prefix)
            parts.append(ds.map_batches(rows_of, batch_format="pyarrow", zero_copy_batch=True))
    ds = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    # one schema for every block, whatever columns a block happened to leave null
    return ds.map_batches(conform, batch_format="pyarrow", zero_copy_batch=True)


@cache
def record_files() -> type:
    """The Ray datasource class `RecordFiles`, made on first use: importing ray.data takes
    seconds, and a recipe is validated without it."""
    from ray.data.datasource import FileBasedDatasource

    class RecordFiles(FileBasedDatasource):
        """Each file read whole in a Ray task and parsed by `parse_file`, or a saved
        dataset's Arrow file streamed batch by batch. Files are opened undecompressed:
        a corrupt .gz or .zst becomes a quarantined row here, not a failed read task."""

        def __init__(
            self,
            paths: list[str],
            *,
            filesystem: pafs.FileSystem | None,
            prefix: str,
            id_field: str,
            max_record_bytes: int,
        ) -> None:
            super().__init__(paths, filesystem=filesystem)
            self.prefix, self.id_field, self.limit = prefix, id_field, max_record_bytes

        def resolve_compression(self, path: str, open_args: dict[str, Any]) -> str | None:
            return None

        def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
            uri = self.prefix + path
            if path.endswith(ARROW_SUFFIX):
                rows: Iterable[dict[str, Any]] = arrow_rows(f, uri, self.id_field, self.limit)
            else:
                rows = parse_file(uri, f.readall(), self.id_field, self.limit)
            block: list[dict[str, Any]] = []
            for row in rows:
                block.append(row)
                if len(block) == BLOCK_ROWS:
                    yield to_table(block)
                    block = []
            if block:
                yield to_table(block)

    return RecordFiles


def _hub_rows(uri: str, id_field: str) -> Any:
    """`hf:NAME[:split]` from the Hub, streamed: Ray reads the Hub's Parquet files in
    its tasks where the dataset has them. Needs the network; every split if none named."""
    import datasets
    import ray.data

    name, split = split_hf(uri)
    loaded = datasets.load_dataset(name, split=split, streaming=True)
    splits = (
        loaded.items() if isinstance(loaded, datasets.IterableDatasetDict) else [(split, loaded)]
    )
    parts = []
    for split_name, dataset in splits:
        file = f"hf:{name}:{split_name}" if split_name else f"hf:{name}"
        rows_of = partial(parquet_rows, id_field=id_field, file=file)
        ds = ray.data.from_huggingface(dataset)
        parts.append(ds.map_batches(rows_of, batch_format="pyarrow", zero_copy_batch=True))
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


# ------------------------------------------------------------------------------ formats


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
