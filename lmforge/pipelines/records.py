"""The row every data stage passes along, and the fates a row can end in.

Steps never remove rows: they mark them. A row is `kept` until a step sets
`fate="dropped"` with a `reason`, or the reader sets `fate="quarantined"` with the
`error` that made the input unreadable. Writing out is the only place rows are split,
so `read == kept + dropped + quarantined` holds by construction and is checked there.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

KEPT, DROPPED, QUARANTINED = "kept", "dropped", "quarantined"
FATES = (KEPT, DROPPED, QUARANTINED)

MESSAGES_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))

# One schema for every batch of every step, so blocks never disagree on types.
ROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # the record's own id, or "<file>:<line>"
        ("text", pa.string()),
        ("chars_in", pa.int64()),  # length of the text as read, before any step changed it
        ("source", pa.string()),
        ("lang", pa.string()),
        ("meta", pa.string()),  # JSON object of the record's other fields
        ("messages", MESSAGES_TYPE),  # conversations (filter-synthetic) only
        ("fate", pa.string()),
        ("step", pa.string()),  # the step that dropped or quarantined the row
        ("reason", pa.string()),  # why it was dropped
        ("error", pa.string()),  # why it was quarantined
        ("file", pa.string()),
        ("line", pa.int64()),  # 1-based line (JSONL) or position (JSON list) in `file`
        ("raw", pa.string()),  # the record as read (JSON text), consumed by `extract`
    ]
)

# What each output keeps of a row.
KEPT_COLUMNS = ["id", "text", "source", "lang", "meta"]
DROPPED_COLUMNS = ["id", "step", "reason", "text", "source", "lang", "meta", "file", "line"]
QUARANTINED_COLUMNS = ["id", "step", "error", "file", "line", "raw"]


def empty_row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ROW_SCHEMA.names)
    row["fate"] = KEPT
    row.update(values)
    return row


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def conform(table: pa.Table) -> pa.Table:
    """Cast a batch to ROW_SCHEMA (columns in order, types fixed, missing ones null)."""
    cols = []
    for field in ROW_SCHEMA:
        if field.name in table.column_names:
            cols.append(table.column(field.name).cast(field.type))
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(cols, schema=ROW_SCHEMA)
