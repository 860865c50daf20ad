"""Write a data stage's rows by fate, count what landed, and reconcile.

Layout of a stage output folder:

    kept/          Parquet, the rows the next stage reads
    dropped/       Parquet + JSONL, each row with the step and reason that dropped it
    quarantined/   Parquet + JSONL, each unreadable input with its error, file and line
    manifest.json  counts (by fate, step and reason), schema, inputs, producing run

The counts in the manifest are read back from the files written, and the stage fails
unless kept + dropped + quarantined equals the rows read.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from lmforge.pipelines.records import (
    DROPPED,
    DROPPED_COLUMNS,
    FATES,
    KEPT,
    KEPT_COLUMNS,
    QUARANTINED,
    QUARANTINED_COLUMNS,
)
from lmforge.platform import storage

ROWS_PER_FILE = 100_000  # group small blocks into fewer, larger files
COLUMNS = {KEPT: KEPT_COLUMNS, DROPPED: DROPPED_COLUMNS, QUARANTINED: QUARANTINED_COLUMNS}


class AccountingError(RuntimeError):
    """Rows were lost or invented between reading and writing."""


def write_stage_output(
    ds: Any,
    output: str,
    *,
    stage: str,
    inputs: list[str],
    run_id: str | None,
    kept_columns: list[str] | None = None,
    kept_jsonl: bool = False,
) -> dict[str, Any]:
    """Materialize `ds` (ROW_SCHEMA rows), write each fate, reconcile, write the manifest.

    Returns the manifest. Each fate's folder is replaced as a whole, so a rerun never
    mixes rows of two runs. kept_jsonl: also write the kept rows as JSON lines (chat data
    that other tools read); dropped and quarantined rows always are.
    """
    from ray.data.datasource import FilenameProvider

    for fate in FATES:  # not the whole folder: a stage may keep its own state beside
        storage.remove(storage.join(output, fate))
    ds = ds.materialize()  # computed once, then split three ways
    read = ds.count()
    columns = {**COLUMNS, KEPT: kept_columns or KEPT_COLUMNS}
    for fate in FATES:
        part = ds.map_batches(
            _select, fn_args=(fate, columns[fate]), batch_format="pyarrow", zero_copy_batch=True
        )
        folder = storage.join(output, fate)
        part.write_parquet(folder, min_rows_per_file=ROWS_PER_FILE)
        if fate != KEPT or kept_jsonl:  # the ones people read: also as JSON lines
            part.write_json(
                folder,
                filename_provider=FilenameProvider(file_format="jsonl"),
                min_rows_per_file=ROWS_PER_FILE,
                force_ascii=False,
            )
    written = {fate: _count_parquet(storage.join(output, fate)) for fate in FATES}
    total = sum(written.values())
    if total != read:
        raise AccountingError(
            f"{stage}: read {read} rows but wrote {total} "
            f"(kept {written[KEPT]}, dropped {written[DROPPED]}, "
            f"quarantined {written[QUARANTINED]})"
        )
    manifest = {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": inputs,
        "mlflow_run_id": run_id,
        "counts": {"read": read, **written},
        "dropped_by_reason": _reasons(ds, DROPPED, "reason"),
        "quarantined_by_step": _reasons(ds, QUARANTINED, "step"),
        "schema": {f: str(t) for f, t in _kept_schema(storage.join(output, KEPT)).items()},
    }
    storage.write_manifest(output, manifest)
    return manifest


def _select(batch: pa.Table, fate: str, columns: list[str]) -> pa.Table:
    return batch.filter(pc.equal(batch["fate"], fate)).select(columns)


def parquet_dataset(folder: str) -> pads.Dataset | None:
    """The Parquet files of a stage output folder (its JSONL twins left aside), or None
    when there are none: Ray writes no file for an empty dataset."""
    fs, path = storage.filesystem(folder)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    files = [
        i.path
        for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
        if i.is_file and i.path.endswith(".parquet")
    ]
    return pads.dataset(sorted(files), format="parquet", filesystem=fs) if files else None


def _count_parquet(folder: str) -> int:
    """Rows in the Parquet files of a folder, from their footers alone."""
    dataset = parquet_dataset(folder)
    return int(dataset.count_rows()) if dataset is not None else 0


def _kept_schema(folder: str) -> dict[str, pa.DataType]:
    dataset = parquet_dataset(folder)
    return {f.name: f.type for f in dataset.schema} if dataset is not None else {}


def _reasons(ds: Any, fate: str, column: str) -> dict[str, int]:
    """Counts of "step/value" among rows of one fate: tallied per block on the workers,
    so only one small table per block comes back to the driver."""
    counter: Counter[str] = Counter()
    tallies = ds.map_batches(_tally, fn_args=(fate, column), batch_format="pyarrow")
    for row in tallies.iter_rows():
        counter[row["key"]] += row["n"]
    return dict(sorted(counter.items()))


def _tally(batch: pa.Table, fate: str, column: str) -> pa.Table:
    rows = batch.filter(pc.equal(batch["fate"], fate))
    steps, values = rows["step"].to_pylist(), rows[column].to_pylist()
    keys = Counter(
        s if column == "step" else reason_key(s, v) for s, v in zip(steps, values, strict=True)
    )
    return pa.table({"key": list(keys), "n": list(keys.values())}, schema=_TALLY)


def reason_key(step: str, reason: str) -> str:
    """ "step/reason", where a reason that already names its step is not prefixed twice."""
    return reason if reason.startswith(f"{step}/") else f"{step}/{reason}"


_TALLY = pa.schema([("key", pa.string()), ("n", pa.int64())])
