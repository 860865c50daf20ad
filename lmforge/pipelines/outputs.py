"""Write a data stage's rows by fate, count what landed, and reconcile.

Layout of a stage output folder:

    kept/          Parquet, the rows the next stage reads
    dropped/       Parquet + JSONL, each row with the step and reason that dropped it
    quarantined/   Parquet + JSONL, each unreadable input with its error, file and line
    manifest.json  counts (by fate, step and reason), schema, inputs, producing run, and
                   `digest`: the kept rows' content (`platform.digest`: a sum of row
                   hashes, the same whatever the files' names, split and order)

The counts in the manifest are read back from the files written, and the stage fails
unless kept + dropped + quarantined equals the records read, as the readers counted them
per input file where the records entered (`readers.ReadTally`), before any step ran.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Mapping
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
from lmforge.platform import digest, storage

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
    read_by_file: Mapping[str, int],
    kept_columns: list[str] | None = None,
    kept_jsonl: bool = False,
) -> dict[str, Any]:
    """Write `ds` (ROW_SCHEMA rows) by fate in one pass, reconcile, write the manifest.

    read_by_file: input file -> records the readers produced for it (`ReadTally.counts()`);
    AccountingError unless the rows written add up to their sum.

    Returns the manifest. Each fate's folder is replaced as a whole, so a rerun never
    mixes rows of two runs. kept_jsonl: also write the kept rows as JSON lines (chat data
    that other tools read); dropped and quarantined rows always are.

    One Ray Data pass writes every fate of each batch (Parquet, plus JSONL) and returns
    its counts by fate and reason: a pass per fate and format, as `write_parquet` and
    `write_json` would need, costs a dataset execution each (1-3 s apiece on a small
    machine, whatever the data size).
    """
    fs, root = storage.filesystem(output)
    for fate in FATES:  # not the whole folder: a stage may keep its own state beside
        storage.remove(storage.join(output, fate))
        fs.create_dir(f"{root}/{fate}", recursive=True)
    columns = {**COLUMNS, KEPT: kept_columns or KEPT_COLUMNS}
    jsonl = tuple(f for f in FATES if f != KEPT or kept_jsonl)
    tallies = ds.map_batches(
        _write_fates,
        fn_kwargs={"output": output, "columns": columns, "jsonl": jsonl},
        batch_size=ROWS_PER_FILE,
        batch_format="pyarrow",
    )
    counted: Counter[str] = Counter()
    for row in tallies.iter_rows():
        counted[row["key"]] += row["n"]
    read = sum(read_by_file.values())
    reached = sum(counted[f"fate:{fate}"] for fate in FATES)
    written = {fate: _count_parquet(storage.join(output, fate)) for fate in FATES}
    total = sum(written.values())
    if total != read or reached != read or any(written[f] != counted[f"fate:{f}"] for f in FATES):
        raise AccountingError(
            f"{stage}: the readers read {read} records from {len(read_by_file)} files, "
            f"{reached} rows reached the writer and {total} were written "
            f"(kept {written[KEPT]}, dropped {written[DROPPED]}, "
            f"quarantined {written[QUARANTINED]}): "
            + (f"{read - total} lost" if read > total else f"{total - read} invented")
        )
    manifest = {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": inputs,
        "mlflow_run_id": run_id,
        "counts": {"read": read, **written},
        "digest": kept_digest(counted, written[KEPT]),
        "read_by_file": dict(read_by_file),
        "dropped_by_reason": _by_prefix(counted, "reason:"),
        "quarantined_by_step": _by_prefix(counted, "step:"),
        "schema": {f: str(t) for f, t in _kept_schema(storage.join(output, KEPT)).items()},
    }
    storage.write_manifest(output, manifest)
    return manifest


def _write_fates(
    batch: pa.Table, output: str, columns: dict[str, list[str]], jsonl: tuple[str, ...]
) -> pa.Table:
    """Write one batch's rows of each fate to `<output>/<fate>/<uuid>.parquet` (+ .jsonl);
    return its counts: "fate:<fate>", "reason:<step/reason>" (dropped), "step:<step>"
    (quarantined), and "digest:<i>" the pieces of the sum of the kept rows' hashes."""
    import pyarrow.parquet as pq

    fs, root = storage.filesystem(output)
    name = uuid.uuid4().hex
    counts: Counter[str] = Counter()
    for fate in FATES:
        part = batch.filter(pc.equal(batch["fate"], fate))
        counts[f"fate:{fate}"] += part.num_rows
        if part.num_rows == 0:
            continue
        if fate == DROPPED:
            steps, reasons = part["step"].to_pylist(), part["reason"].to_pylist()
            counts.update(f"reason:{reason_key(s, r)}" for s, r in zip(steps, reasons, strict=True))
        elif fate == QUARANTINED:
            counts.update(f"step:{s}" for s in part["step"].to_pylist())
        part = part.select(columns[fate])
        if fate == KEPT:
            total = sum(digest.record_hashes(part)) % digest.MOD
            for i, piece in enumerate(digest.to_pieces(total)):
                counts[f"digest:{i}"] += piece
        pq.write_table(part, f"{root}/{fate}/{name}.parquet", filesystem=fs)
        if fate in jsonl:
            lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part.to_pylist())
            with fs.open_output_stream(f"{root}/{fate}/{name}.jsonl") as f:
                f.write(lines.encode("utf-8"))
    return pa.table({"key": list(counts), "n": list(counts.values())}, schema=_TALLY)


def kept_digest(counted: Mapping[str, int], kept: int) -> str:
    """The kept rows' digest from the summed tally pieces of every batch."""
    total = digest.from_pieces(counted.get(f"digest:{i}", 0) for i in range(digest.PIECES))
    return digest.of_rows("rows", kept, total)


def _by_prefix(counts: Counter[str], prefix: str) -> dict[str, int]:
    return {
        k.removeprefix(prefix): n for k, n in sorted(counts.items()) if k.startswith(prefix) and n
    }


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


def reason_key(step: str, reason: str) -> str:
    """ "step/reason", where a reason that already names its step is not prefixed twice."""
    return reason if reason.startswith(f"{step}/") else f"{step}/{reason}"


_TALLY = pa.schema([("key", pa.string()), ("n", pa.int64())])
