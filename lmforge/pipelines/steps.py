"""Base classes for pipeline steps, in datatrove's shape.

A step sees only rows that are still `kept`. A `Filter` implements only
`filter(row) -> bool | (bool, reason)`; the base class marks the row dropped with the
step's name and the reason. A pipeline is a plain list of steps applied in order with
`apply_steps`, each batch a pyarrow Table in ROW_SCHEMA.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from lmforge.pipelines.records import DROPPED, KEPT, QUARANTINED, to_table


class Step:
    """Transforms kept rows in place (normalize, annotate, extract)."""

    name = "step"

    def apply(self, row: dict[str, Any]) -> None:
        raise NotImplementedError


class Filter(Step):
    """Keeps or drops a row; `filter` returns True to keep, or (False, reason)."""

    def filter(self, row: dict[str, Any]) -> bool | tuple[bool, str]:
        raise NotImplementedError

    def apply(self, row: dict[str, Any]) -> None:
        result = self.filter(row)
        keep, reason = (result, self.name) if isinstance(result, bool) else result
        if not keep:
            drop(row, self.name, reason)


def read_meta(row: dict[str, Any]) -> dict[str, Any]:
    """The row's `meta` JSON as a dict (empty when the row has none)."""
    meta = row.get("meta")
    return json.loads(meta) if meta else {}


def update_meta(row: dict[str, Any], **fields: Any) -> None:
    """Merge fields into the row's `meta` JSON."""
    row["meta"] = json.dumps({**read_meta(row), **fields}, ensure_ascii=False)


def drop(row: dict[str, Any], step: str, reason: str) -> None:
    row.update(fate=DROPPED, step=step, reason=reason)


def quarantine(row: dict[str, Any], step: str, error: str) -> None:
    row.update(fate=QUARANTINED, step=step, error=error)


class Pipeline:
    """A list of steps run on one batch; one Ray task per batch runs them all, so
    rows are not shuffled between steps. Heavy state is built once per process."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        for step in self.steps:
            for row in rows:
                if row["fate"] == KEPT:
                    step.apply(row)
        return to_table(rows)


class StepsActor:
    """Ray Data callable class: `build(**kwargs)` makes the steps once per actor, so models
    and n-gram indexes are built where they run and never pickled into every task; only
    `build` (a module-level function) and its small, plain kwargs travel."""

    def __init__(self, build: Callable[..., Sequence[Step]], **kwargs: Any) -> None:
        self.pipeline = Pipeline(build(**kwargs))

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.pipeline(batch)
