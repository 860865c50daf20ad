"""curate throughput: `lmforge.jobs.curate.run` (Ray Data) vs one plain Python process.

    python benchmarks/curate_throughput.py [--size 10000] [--files 4] [--basic]

Input: `--size` JSONL records in `--files` shards, made on the spot from the built-in
docstring corpus, with planted exact duplicates (case and whitespace changed, half with
an id sorting before the original's, half after) and a few unreadable records.

Both sides do the whole stage: read and parse the files (unreadable records quarantined),
the per-document steps of the recipe (extract, normalize, length filter, and whatever
else this lmforge's `curation.curate_steps` enables: language ID, quality filters, PII),
exact dedup keeping the smallest id, then write kept/dropped/quarantined as Parquet
(+ JSONL for dropped and quarantined) and a manifest. Whole-corpus extras the baseline
does not have (MinHash near-dedup, the HTML report) are switched off. The baseline uses
lmforge's own pure-Python rules (`parse_file`, the same `Step` objects, `text_key`) in
one process, without Ray or Arrow between steps.

Agreement, record by record: the fate of every record (kept, or dropped/quarantined with
its step and reason) and the text of every kept record must be the same on both sides;
the script prints the first differences and exits 1 when any is found. Speed goal:
lmforge (2 cores) at least as fast as the one-process loop (ratio >= 1); missing it is
printed but does not fail the run.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import harness

SPEED_GOAL = 1.0  # lmforge / baseline docs/s: Ray Data on 2 cores vs one plain process


def make_corpus(folder: Path, n: int, n_files: int, dup_fraction: float) -> dict[str, int]:
    """Write n records as JSONL shards; returns what was planted."""
    n_bad = max(2, n // 2000)
    n_dup = int(n * dup_fraction)
    docs = harness.docstrings(n - n_dup - n_bad)
    rng = random.Random(1234)
    lines = [json.dumps(d, ensure_ascii=False) for d in docs]
    # copies of documents long enough to pass the length filter, so dedup has work to do
    long_docs = [d for d in docs if len(d["text"]) >= 500 and len(d["text"].split()) >= 50]
    for i in range(n_dup):
        src = rng.choice(long_docs or docs)
        text = src["text"].upper() if i % 3 == 0 else "  " + src["text"].replace(" ", "   ")
        prefix = "a-dup" if i % 2 == 0 else "zz-dup"  # sorts before / after "pydoc:..."
        lines.append(json.dumps({"id": f"{prefix}:{i:06d}", "text": text}, ensure_ascii=False))
    for i in range(n_bad):
        lines.append("{not json" if i % 2 == 0 else json.dumps({"id": f"bad:{i}", "body": "x"}))
    rng.shuffle(lines)
    folder.mkdir(parents=True)
    per_file = -(-len(lines) // n_files)
    for k in range(n_files):
        part = lines[k * per_file : (k + 1) * per_file]
        (folder / f"part-{k:04d}.jsonl").write_text("\n".join(part) + "\n", encoding="utf-8")
    return {"records": len(lines), "planted_duplicates": n_dup, "planted_unreadable": n_bad}


def stage_recipe(tmp: Path, corpus: Path, args: argparse.Namespace) -> Any:
    """The curate recipe both sides follow. Whole-corpus steps the baseline does not have
    (MinHash near-dedup, the HTML report) are switched off where this lmforge has them;
    `--basic` also switches off the per-document steps beyond extract/normalize/length."""
    from lmforge.pipelines.config import CurateConfig

    fields = CurateConfig.model_fields
    sets = [f"curate.min_chars={args.min_chars}", f"curate.min_words={args.min_words}"]
    if "minhash" in fields:
        sets.append("curate.minhash.enabled=false")
    if "report" in fields:
        sets.append("curate.report=false")
    if args.basic:
        for key in ("language.enabled", "pii"):
            if key.split(".")[0] in fields:
                sets.append(f"curate.{key}=false")
        if "quality" in fields:  # every quality filter that is on by default
            quality = getattr(CurateConfig(), "quality").model_dump()  # noqa: B009
            sets += [f"curate.quality.{q}=false" for q, on in quality.items() if on is True]
    return harness.recipe(tmp, "curate", [str(corpus)], str(tmp / "lmforge-out"), *sets)


def document_steps(r: Any) -> list[Any]:
    """The per-document steps the stage runs for this recipe (the same objects)."""
    from lmforge.pipelines.curation import curate_steps

    return curate_steps(r.curate.model_dump())


def run_lmforge(r: Any) -> float:
    from lmforge.jobs import curate

    harness.prepare_mlflow(r)
    sw = harness.Stopwatch()
    with sw.span("run"):
        curate.run(r)
    return sw["run"]


def run_baseline(tmp: Path, corpus: Path, r: Any) -> tuple[float, list[dict[str, Any]], list[str]]:
    """The curate rules as one loop: parse, the document steps, exact dedup, write."""
    from lmforge.pipelines.records import KEPT

    sw = harness.Stopwatch()
    with sw.span("run"):
        steps = document_steps(r)  # models load here, as in each lmforge actor
        rows = harness.read_rows_plain(sorted(corpus.glob("*.jsonl")))
        for row in rows:
            for step in steps:
                if row["fate"] != KEPT:
                    break
                step.apply(row)
        if getattr(r.curate, "exact_dedup", True):
            harness.exact_dedup_plain(rows)
        harness.write_rows_plain(rows, tmp / "baseline-out")
    return sw["run"], rows, [type(s).__name__ for s in steps]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=10_000, help="records in the corpus")
    ap.add_argument("--files", type=int, default=4, help="JSONL shards the corpus is split into")
    ap.add_argument("--dup-fraction", type=float, default=0.05, help="planted exact duplicates")
    ap.add_argument("--min-chars", type=int, default=200, help="curate.min_chars")
    ap.add_argument("--min-words", type=int, default=20, help="curate.min_words")
    ap.add_argument(
        "--basic", action="store_true", help="only extract, normalize, length filter, exact dedup"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as d:
        tmp = Path(d)
        corpus = tmp / "corpus"
        planted = make_corpus(corpus, args.size, args.files, args.dup_fraction)
        n = planted["records"]
        print(f"corpus: {n:,} records in {args.files} files, {planted}")

        r = stage_recipe(tmp, corpus, args)
        t_base, rows, steps = run_baseline(tmp, corpus, r)
        print(f"document steps: {', '.join(steps)}; then exact dedup")
        t_ray = harness.start_ray()
        try:
            t_lm = run_lmforge(r)
        finally:
            harness.stop_ray()
        out = Path(r.curate.output)
        lm, files = harness.fates_of_output(out), harness.parquet_files(out)
        kept_text_lm = harness.kept_of_output(out)
    base = harness.fates_of_rows(rows)

    notes = harness.compare_fates(lm, base)
    text_notes = harness.compare_kept(kept_text_lm, harness.kept_of_rows(rows))
    kept_lm = {i for i, (f, _) in lm.items() if f == "kept"}
    kept_base = {i for i, (f, _) in base.items() if f == "kept"}
    cores = harness.RAY_CPUS
    print(f"Ray startup (not timed below): {t_ray:.1f} s; lmforge Parquet files: {files}")
    harness.table(
        [
            ("lmforge curate (Ray Data)", str(cores), harness.fmt(t_lm, 2),
             harness.fmt(n / t_lm), harness.fmt(n / t_lm / cores)),
            ("plain Python loop", "1", harness.fmt(t_base, 2),
             harness.fmt(n / t_base), harness.fmt(n / t_base)),
        ],
        ("", "cores", "seconds", "docs/s", "docs/s/core"),
    )  # fmt: skip
    print(f"fates: {dict(Counter(d or f for f, d in lm.values()))}")
    print(
        f"agreement: kept-id sets equal={kept_lm == kept_base} ({len(kept_lm):,} kept), "
        f"every record's fate and reason equal={not notes}, "
        f"every kept record's text equal={not text_notes}"
    )
    for note in notes + text_notes:
        print(f"  MISMATCH {note}")
    return harness.result(
        "curate_throughput", n / t_lm, n / t_base, "docs/s",
        agree=not notes and not text_notes, goal=SPEED_GOAL,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
