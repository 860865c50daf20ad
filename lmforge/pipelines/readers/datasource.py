"""The Ray Dataset of every input's rows: built-in corpora made on the driver, Hub
datasets streamed, Parquet by Ray's reader, other files read whole in Ray tasks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cache, partial
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lmforge.pipelines.readers.discovery import by_filesystem, expand, split_hf
from lmforge.pipelines.readers.formats import (
    ARROW_SUFFIX,
    PARQUET_SUFFIXES,
    arrow_rows,
    parquet_rows,
    parse_file,
)
from lmforge.pipelines.readers.hub import hub_rows
from lmforge.pipelines.readers.tally import ReadTally, report
from lmforge.pipelines.records import conform, to_table
from lmforge.platform import storage

BLOCK_ROWS = 1024  # rows per block a read task hands on


def read_rows(
    inputs: list[str],
    *,
    id_field: str,
    max_record_bytes: int,
    max_builtin_docs: int = 4000,
    tally: ReadTally | None = None,
) -> Any:
    """A Ray Dataset of ROW_SCHEMA rows with `raw` JSON text, one per input record.

    tally: where the readers count each file's records as they read them (see
    `tally.py`); the stage reconciles its written rows against it."""
    import ray.data

    from lmforge.pipelines.builtin_corpus import builtin_bytes

    parts: list[Any] = []
    for uri in [u for u in inputs if u.startswith("builtin:")]:
        # made on the driver and handed over: no file that other nodes would lack
        name, data = builtin_bytes(uri.removeprefix("builtin:"), max_builtin_docs)
        rows = list(parse_file(f"builtin/{name}", data, id_field, max_record_bytes))
        if tally is not None:
            tally.set(f"builtin/{name}", len(rows))
        parts.append(ray.data.from_items(rows))
    hub = [u for u in inputs if u.startswith("hf:") and not storage.exists(split_hf(u)[0])]
    parts += [hub_rows(u, id_field, tally=tally) for u in hub]
    files = expand([u for u in inputs if not u.startswith("builtin:") and u not in hub])
    for prefix, fs, paths in by_filesystem(files):
        parquet = [p for p in paths if p.endswith(PARQUET_SUFFIXES)]
        other = [p for p in paths if not p.endswith(PARQUET_SUFFIXES)]
        if other:
            source = record_files()(
                other,
                filesystem=fs,
                prefix=prefix,
                id_field=id_field,
                max_record_bytes=max_record_bytes,
                tally=tally.actor() if tally is not None else None,
            )
            parts.append(ray.data.read_datasource(source))
        if parquet:
            if tally is not None:  # every row of a Parquet file becomes a row: its footer
                for path in parquet:
                    tally.set(prefix + path, pq.read_metadata(path, filesystem=fs).num_rows)
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
            tally: Any = None,
        ) -> None:
            super().__init__(paths, filesystem=filesystem)
            self.prefix, self.id_field, self.limit = prefix, id_field, max_record_bytes
            self.tally = tally

        def resolve_compression(self, path: str, open_args: dict[str, Any]) -> str | None:
            return None

        def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
            uri = self.prefix + path
            if path.endswith(ARROW_SUFFIX):
                rows: Iterable[dict[str, Any]] = arrow_rows(f, uri, self.id_field, self.limit)
            else:
                rows = parse_file(uri, f.readall(), self.id_field, self.limit)
            block: list[dict[str, Any]] = []
            n = 0
            for row in rows:
                block.append(row)
                n += 1
                if len(block) == BLOCK_ROWS:
                    yield to_table(block)
                    block = []
            if self.tally is not None:  # every record of the file is parsed: count it
                report(self.tally, uri, n)
            if block:
                yield to_table(block)

    return RecordFiles
