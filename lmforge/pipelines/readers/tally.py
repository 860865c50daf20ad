"""Records counted where they enter: per input file, by the readers themselves.

A stage's `read` count must not be the rows that reach its writer (a step that loses a
row would then pass unseen), so the readers report how many records each input file
gave them, before any step runs: a JSONL file its non-blank lines (malformed ones too),
a JSON list its elements, a CSV file its rows, a Parquet file the rows its footer
declares, a text file one document, an unreadable file the one quarantined row that
stands for it. `write_stage_output` reconciles the rows written against these counts.

Counts made inside Ray read tasks go to a small actor. A task reports a file once it has
yielded all of that file's rows, and a report *sets* the file's count (it never adds),
so a read task that Ray retries after a failure cannot count a file twice.
"""

from __future__ import annotations

from typing import Any


class ReadTally:
    """file URI -> records the readers produced for it. Create it on the driver, pass it
    to `read_rows`, read `counts()` after the dataset has run."""

    def __init__(self) -> None:
        self._local: dict[str, int] = {}
        self._actor: Any = None

    def set(self, file: str, n: int) -> None:
        """A count known on the driver (built-in corpora, Parquet footers)."""
        self._local[file] = n

    def actor(self) -> Any:
        """The handle read tasks report to (started on first use)."""
        if self._actor is None:
            import ray

            self._actor = ray.remote(num_cpus=0)(_Counts).remote()
        return self._actor

    def counts(self) -> dict[str, int]:
        remote: dict[str, int] = {}
        if self._actor is not None:
            import ray

            remote = ray.get(self._actor.counts.remote())
        return dict(sorted({**remote, **self._local}.items()))


class _Counts:
    """The actor behind `ReadTally`: the last count reported for each file."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def set(self, file: str, n: int) -> None:
        self._counts[file] = n

    def add(self, file: str, n: int) -> None:
        self._counts[file] = self._counts.get(file, 0) + n

    def counts(self) -> dict[str, int]:
        return dict(self._counts)


def report(actor: Any, file: str, n: int) -> None:
    """From a read task: `file` gave `n` records. Waits for the actor, so the count is
    in before the task's last block is handed on."""
    import ray

    ray.get(actor.set.remote(file, n))
