"""What every benchmark script shares: a local Ray, a throwaway recipe, input data,
timing, and the table and `RESULT` line each script ends with.

Not a benchmark itself. Scripts run as `python benchmarks/NAME.py`, so this folder is on
`sys.path` and they `import harness`.

Every script measures lmforge and a baseline in the same process, on the same input and
the same cores, and prints `ratio = lmforge / baseline` (for a throughput, above 1 means
lmforge is faster; for a latency, above 1 means lmforge is slower).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
RAY_CPUS = 2  # CPUs lmforge's Ray gets; baselines run in this process, threads capped to it


def shared_data(relpath: str) -> Path | None:
    """A file of ../shared/data when present; benchmarks run without it."""
    path = SHARED_DATA / relpath
    return path if path.exists() else None


# ------------------------------------------------------------------------ timing


class Stopwatch:
    """Named wall-clock spans (seconds), each measured around a `with` block."""

    def __init__(self) -> None:
        self.spans: dict[str, float] = {}

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.spans[name] = time.perf_counter() - t0

    def __getitem__(self, name: str) -> float:
        return self.spans[name]


# ------------------------------------------------------------------------ Ray, recipes


def start_ray() -> float:
    """A local Ray with RAY_CPUS CPUs (never another user's cluster), its workers warm.

    Returns the seconds it took: Ray startup is reported apart from the work.
    """
    import ray
    import ray.data

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=1)
    def _noop() -> int:
        import pyarrow.parquet  # noqa: F401
        import ray.data  # noqa: F401

        return os.getpid()

    # start the worker processes, with the imports every Ray Data task makes (seconds on
    # a fresh worker: a fixed cost of Ray, like its startup, not of a stage)
    ray.get([_noop.remote() for _ in range(RAY_CPUS)])
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one line per dataset otherwise
    return time.perf_counter() - t0


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def recipe(tmp: Path, stage: str | None, inputs: list[str], output: str | None, *sets: str) -> Any:
    """A recipe whose workdir and MLflow store live in `tmp`, nothing in the repository."""
    from lmforge.jobs.recipe import load_recipe

    return load_recipe(
        None,
        stage=stage,
        input=inputs,
        output=output,
        overrides=[
            f"workdir={tmp / 'work'}",
            f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
            f"ray.num_cpus={RAY_CPUS}",
            *sets,
        ],
    )


def prepare_mlflow(r: Any) -> float:
    """Create the MLflow store and experiment before the clock starts (a one-off cost of
    a fresh store, not of a stage); returns the seconds it took."""
    from lmforge.platform import tracking

    t0 = time.perf_counter()
    tracking.setup(r.mlflow.tracking_uri, r.mlflow.experiment)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------ data


def docstrings(n: int) -> list[dict[str, str]]:
    """n records {id, text, source} from the built-in docstring corpus; when the installed
    code has fewer, the corpus is repeated with fresh ids (`<id>~<k>`) and its words
    reshuffled, so the repeats are new documents, not duplicates."""
    from lmforge.pipelines.builtin_corpus import iter_docstrings

    base = list(iter_docstrings(n))
    out = list(base)
    rng = random.Random(0)
    k = 0
    while len(out) < n and base:
        k += 1
        for rec in base[: n - len(out)]:
            words = rec["text"].split(" ")
            rng.shuffle(words)
            out.append({**rec, "id": f"{rec['id']}~{k}", "text": " ".join(words)})
    return out


# ------------------------------------------------------------------------ output


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    """A plain-text table: first column left-aligned, the figures right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in pairs)

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def result(
    name: str,
    lmforge: float,
    baseline: float,
    unit: str,
    *,
    agree: bool,
    goal: float | None = None,
    lower_is_better: bool = False,
) -> int:
    """Print the closing RESULT line; returns the exit status (1 when the two disagree).

    goal: the ratio lmforge aims at (at least, or at most with lower_is_better). Missing
    it is printed, plainly, but is no failure: speed moves with the machine, agreement
    does not.
    """
    ratio = lmforge / baseline if baseline else float("nan")
    tail = ""
    met = True
    if goal is not None:
        op = "<=" if lower_is_better else ">="
        met = ratio <= goal if lower_is_better else ratio >= goal  # False when ratio is nan
        tail = f", goal=ratio{op}{goal:g} {'met' if met else 'MISSED'}"
    print(
        f"RESULT {name}: lmforge={_num(lmforge)} {unit}, baseline={_num(baseline)} {unit}, "
        f"ratio={ratio:.3g}{tail}",
        flush=True,
    )
    if not met:
        print(
            f"{name}: speed goal MISSED: ratio {ratio:.3g}, goal {op} {goal:g} "
            "(reported, not an exit failure)",
            flush=True,
        )
    if not agree:
        print(f"{name}: lmforge and the baseline DISAGREE (see above)", file=sys.stderr)
    return 0 if agree else 1


# ------------------------------------------------------------------------ data stages

Fates = dict[str, tuple[str, str | None]]  # record id -> (fate, "step/reason" or step)


def _detail(fate: str, step: str | None, reason: str | None) -> str | None:
    """ "step/reason" of a dropped row (once, when the reason already names the step),
    the step of a quarantined one."""
    if fate == "dropped":
        return reason if reason and reason.startswith(f"{step}/") else f"{step}/{reason}"
    return step if fate == "quarantined" else None


def fates_of_output(out: Path) -> Fates:
    """The fate of every record in a stage output folder written by lmforge."""
    from lmforge.pipelines.outputs import parquet_dataset

    fates: Fates = {}
    for fate, cols in (
        ("kept", ["id"]),
        ("dropped", ["id", "step", "reason"]),
        ("quarantined", ["id", "step"]),
    ):
        ds = parquet_dataset(str(out / fate))
        for row in ds.to_table(columns=cols).to_pylist() if ds is not None else []:
            fates[row["id"]] = (fate, _detail(fate, row.get("step"), row.get("reason")))
    return fates


def parquet_files(out: Path) -> dict[str, int]:
    """Parquet files per fate folder (many tiny files are a cost of their own)."""
    return {f: len(list((out / f).glob("*.parquet"))) for f in ("kept", "dropped", "quarantined")}


def fates_of_rows(rows: list[dict[str, Any]]) -> Fates:
    return {r["id"]: (r["fate"], _detail(r["fate"], r["step"], r["reason"])) for r in rows}


def compare_fates(lm: Fates, base: Fates) -> list[str]:
    """What differs between two runs' fates (empty: they agree on every record)."""
    notes = []
    if set(lm) != set(base):
        notes.append(f"ids only in lmforge: {sorted(set(lm) - set(base))[:5]}")
        notes.append(f"ids only in baseline: {sorted(set(base) - set(lm))[:5]}")
    differ = sorted(i for i in set(lm) & set(base) if lm[i] != base[i])
    notes += [f"{i}: lmforge {lm[i]}, baseline {base[i]}" for i in differ[:5]]
    if differ:
        notes.append(f"{len(differ)} records with a different fate")
    return notes


Kept = dict[str, tuple[Any, ...]]  # record id -> the kept row's compared columns


def _comparable(value: Any) -> Any:
    """A column value as plain, comparable data (lists of structs from Parquet and the
    baseline's lists of dicts alike)."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


def kept_of_output(out: Path, columns: Sequence[str] = ("text",)) -> Kept:
    """The compared columns of every kept row in a stage output folder written by lmforge."""
    from lmforge.pipelines.outputs import parquet_dataset

    ds = parquet_dataset(str(out / "kept"))
    rows = ds.to_table(columns=["id", *columns]).to_pylist() if ds is not None else []
    return {r["id"]: tuple(_comparable(r[c]) for c in columns) for r in rows}


def kept_of_rows(rows: list[dict[str, Any]], columns: Sequence[str] = ("text",)) -> Kept:
    return {r["id"]: tuple(_comparable(r[c]) for c in columns) for r in rows if r["fate"] == "kept"}


def first_difference(
    a: Any, b: Any, width: int = 60, names: tuple[str, str] = ("lmforge", "baseline")
) -> str:
    """Where two values first differ, with a little of each around that place."""
    a, b = str(a), str(b)
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    lo = max(0, i - width // 2)
    return (
        f"first differ at character {i} (lengths {len(a)} vs {len(b)}): "
        f"{names[0]} {a[lo : i + width]!r}, {names[1]} {b[lo : i + width]!r}"
    )


def compare_kept(lm: Kept, base: Kept, columns: Sequence[str] = ("text",)) -> list[str]:
    """What differs between the kept rows of two runs, record by record (empty: the same
    ids were kept, each with the same columns). Lists the first five differences."""
    notes = []
    if set(lm) != set(base):
        notes.append(f"kept only by lmforge: {sorted(set(lm) - set(base))[:5]}")
        notes.append(f"kept only by the baseline: {sorted(set(base) - set(lm))[:5]}")
    differ = sorted(i for i in set(lm) & set(base) if lm[i] != base[i])
    for i in differ[:5]:
        for col, a, b in zip(columns, lm[i], base[i], strict=True):
            if a != b:
                notes.append(f"{i}: kept {col} differs, {first_difference(a, b)}")
    if differ:
        notes.append(f"{len(differ)} kept records with a different {'/'.join(columns)}")
    return notes


def read_rows_plain(files: list[Path]) -> list[dict[str, Any]]:
    """lmforge's parser (`parse_file`) over each file, in one process."""
    from lmforge.pipelines.readers import parse_file

    rows: list[dict[str, Any]] = []
    for path in files:
        rows.extend(parse_file(str(path), path.read_bytes(), "id", 8_000_000))
    return rows


def exact_dedup_plain(
    rows: list[dict[str, Any]],
    *,
    text_of: Any = None,
    step: str = "exact_dedup",
    reason: str = "exact_duplicate",
) -> None:
    """lmforge's dedup rule with a dict: among kept rows with one `text_key`, the smallest
    id stays, the others are dropped as `step/reason`. text_of: row -> the text compared
    (default: its `text`)."""
    from lmforge.pipelines.dedup import text_key
    from lmforge.pipelines.records import KEPT
    from lmforge.pipelines.steps import drop

    kept = [r for r in rows if r["fate"] == KEPT]
    keys = [text_key(text_of(r) if text_of else r["text"]) for r in kept]
    first: dict[str, dict[str, Any]] = {}
    for key, row in zip(keys, kept, strict=True):
        best = first.get(key)
        if best is None or row["id"] < best["id"]:
            first[key] = row
    for key, row in zip(keys, kept, strict=True):
        best = first[key]
        if best is not row:
            meta = json.loads(row["meta"]) if row["meta"] else {}
            meta["duplicate_of"] = best["id"]
            row["meta"] = json.dumps(meta)
            drop(row, step, reason)


def write_rows_plain(
    rows: list[dict[str, Any]],
    out: Path,
    kept_columns: list[str] | None = None,
    kept_jsonl: bool = False,
) -> None:
    """What `write_stage_output` writes, with pyarrow alone: one Parquet file per fate,
    JSONL twins for dropped and quarantined (and kept, with kept_jsonl), and a manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmforge.pipelines.outputs import COLUMNS
    from lmforge.pipelines.records import ROW_SCHEMA

    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for fate, columns in {**COLUMNS, "kept": kept_columns or COLUMNS["kept"]}.items():
        part = [{c: r[c] for c in columns} for r in rows if r["fate"] == fate]
        counts[fate] = len(part)
        folder = out / fate
        folder.mkdir(parents=True)
        schema = pa.schema([ROW_SCHEMA.field(c) for c in columns])
        pq.write_table(pa.Table.from_pylist(part, schema=schema), folder / "part-0.parquet")
        if fate != "kept" or kept_jsonl:
            with open(folder / "part-0.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
        if fate != "kept":
            reasons.update(str(_detail(fate, r["step"], r.get("reason"))) for r in part)
    manifest = {"counts": {"read": len(rows), **counts}, "by_reason": dict(reasons)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
