"""filter-synthetic throughput: `lmforge.jobs.filter_synthetic.run` vs one plain loop.

    python benchmarks/synthetic_filter_throughput.py [--size 10000] [--files 4]

Input: the instruction records shipped with lmforge (`lmforge/data/synthetic_examples.jsonl`)
plus GPTeacher role-play (`../shared/data/synthetic/gpteacher_roleplay_gpt4.json`, when
present), replicated to `--size` records with fresh ids. Each replica's first user turn
gets a marker (" (variant k)"), so replicas are new conversations rather than exact
duplicates; none of the filters looks at such a marker. Written as JSONL shards.

Both sides do the same work: parse, map each record to a conversation (unknown shapes
quarantined), run the default per-conversation filters (the first objection is the
reason), exact dedup of prompts keeping the smallest id, and write the outputs. The
baseline is a plain loop over the stage's own steps (`ExtractConversation`, `ConversationFilters`).
Agreement, record by record: the fate of every record (kept, or dropped/quarantined with
its step and reason), and the `messages` and rendered `text` of every kept record, must be
the same; the script prints the first differences and exits 1 when any is found. Speed
goal: lmforge (2 cores) at least as fast as the one-process loop (ratio >= 1); missing it
is printed but does not fail the run. Near-duplicate prompts are off on both sides (the replicas ARE near duplicates, and the
baseline has no MinHash; `benchmarks/minhash.py` measures it), as are decontamination
(no evaluation set given) and the HTML report.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from collections import Counter
from importlib.resources import files as package_files
from pathlib import Path
from typing import Any

import harness

GPTEACHER = "synthetic/gpteacher_roleplay_gpt4.json"
SPEED_GOAL = 1.0  # lmforge / baseline records/s: Ray Data on 2 cores vs one plain process
KEPT_COMPARED = ("messages", "text")


def source_records() -> tuple[list[dict[str, Any]], str]:
    shipped = package_files("lmforge").joinpath("data", "synthetic_examples.jsonl").read_text()
    pool = [json.loads(line) for line in shipped.splitlines() if line.strip()]
    what = f"{len(pool)} shipped examples"
    path = harness.shared_data(GPTEACHER)
    if path is not None:
        real = json.loads(path.read_text(encoding="utf-8"))
        pool += [{"id": f"gpteacher:{i:05d}", **r} for i, r in enumerate(real)]
        what += f" + {len(real)} GPTeacher role-play records"
    else:
        what += f" (../shared/data/{GPTEACHER} absent)"
    return pool, what


def vary(record: dict[str, Any], k: int) -> dict[str, Any]:
    """A copy whose first user turn ends with a marker; ids are set by the caller."""
    rec = copy.deepcopy(record)
    mark = f" (variant {k})"
    if isinstance(rec.get("instruction"), str):
        rec["instruction"] += mark
        return rec
    for key, role_key, text_key, users in (
        ("conversations", "from", "value", ("human", "user")),
        ("messages", "role", "content", ("user",)),
    ):
        for turn in rec.get(key) or []:
            if isinstance(turn, dict) and str(turn.get(role_key, "")).lower() in users:
                if isinstance(turn.get(text_key), str):
                    turn[text_key] += mark
                return rec
    return rec


def make_input(folder: Path, n: int, n_files: int) -> str:
    pool, what = source_records()
    lines = []
    for i in range(n):
        k, j = divmod(i, len(pool))
        rec = pool[j] if k == 0 else vary(pool[j], k)
        rid = rec.get("id", f"rec:{i}") if k == 0 else f"{rec.get('id', 'rec')}~{k}"
        lines.append(json.dumps({**rec, "id": rid}, ensure_ascii=False))
    folder.mkdir(parents=True)
    per_file = -(-len(lines) // n_files)
    for f in range(n_files):
        part = lines[f * per_file : (f + 1) * per_file]
        (folder / f"part-{f:04d}.jsonl").write_text("\n".join(part) + "\n", encoding="utf-8")
    return what


def run_lmforge(tmp: Path, data: Path) -> tuple[float, Path]:
    from lmforge.jobs import filter_synthetic

    out = tmp / "lmforge-out"
    r = harness.recipe(
        tmp, "filter-synthetic", [str(data)], str(out),
        "synthetic.near_dedup.enabled=false", "synthetic.report=false",
    )  # fmt: skip
    harness.prepare_mlflow(r)
    sw = harness.Stopwatch()
    with sw.span("run"):
        filter_synthetic.run(r)
    return sw["run"], out


def run_baseline(tmp: Path, data: Path) -> tuple[float, list[dict[str, Any]]]:
    """The filter-synthetic rules as one loop."""
    from lmforge.pipelines.records import KEPT
    from lmforge.pipelines.synthetic import SyntheticFilterConfig, prompt_text
    from lmforge.pipelines.synthetic.steps import (
        CONVERSATION_COLUMNS,
        PROMPT_STEP,
        ConversationFilters,
        ExtractConversation,
    )

    # the stage's own per-row steps, run in a plain loop instead of a Ray actor pool
    steps = [ExtractConversation(), ConversationFilters(SyntheticFilterConfig())]
    sw = harness.Stopwatch()
    with sw.span("run"):
        rows = harness.read_rows_plain(sorted(data.glob("*.jsonl")))
        for step in steps:
            for row in rows:
                if row["fate"] == KEPT:
                    step.apply(row)
        harness.exact_dedup_plain(
            rows,
            text_of=lambda r: prompt_text(r["messages"]),
            step=PROMPT_STEP,
            reason="duplicate_prompt",
        )
        harness.write_rows_plain(
            rows, tmp / "baseline-out", kept_columns=CONVERSATION_COLUMNS, kept_jsonl=True
        )
    return sw["run"], rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=10_000, help="records")
    ap.add_argument("--files", type=int, default=4, help="JSONL shards the records are split into")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as d:
        tmp = Path(d)
        data = tmp / "records"
        what = make_input(data, args.size, args.files)
        n = args.size
        print(f"input: {n:,} records in {args.files} files, replicated from {what}")

        t_base, rows = run_baseline(tmp, data)
        t_ray = harness.start_ray()
        try:
            t_lm, out = run_lmforge(tmp, data)
        finally:
            harness.stop_ray()
        lm, files = harness.fates_of_output(out), harness.parquet_files(out)
        kept_lm = harness.kept_of_output(out, KEPT_COMPARED)
    base = harness.fates_of_rows(rows)

    notes = harness.compare_fates(lm, base)
    kept_notes = harness.compare_kept(
        kept_lm, harness.kept_of_rows(rows, KEPT_COMPARED), KEPT_COMPARED
    )
    cores = harness.RAY_CPUS
    print(f"Ray startup (not timed below): {t_ray:.1f} s; lmforge Parquet files: {files}")
    harness.table(
        [
            ("lmforge filter-synthetic (Ray Data)", str(cores), harness.fmt(t_lm, 2),
             harness.fmt(n / t_lm), harness.fmt(n / t_lm / cores)),
            ("plain loop: the same steps", "1", harness.fmt(t_base, 2),
             harness.fmt(n / t_base), harness.fmt(n / t_base)),
        ],
        ("", "cores", "seconds", "records/s", "records/s/core"),
    )  # fmt: skip
    print(f"fates: {dict(Counter(d or f for f, d in lm.values()))}")
    print(
        f"agreement: every record's fate and reason equal={not notes}, every kept record's "
        f"messages and text equal={not kept_notes} ({len(kept_lm):,} kept)"
    )
    for note in notes + kept_notes:
        print(f"  MISMATCH {note}")
    return harness.result(
        "synthetic_filter_throughput", n / t_lm, n / t_base, "records/s",
        agree=not notes and not kept_notes, goal=SPEED_GOAL,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
