"""tokenize throughput: lmforge's Ray Data tokenize-and-pack vs one process with the
`transformers` fast tokenizer and the same packing.

    python benchmarks/tokenize_throughput.py [--size 30000] [--seq-len 256] [--vocab-size 4096]

Input: `--size` documents of the built-in docstring corpus. A byte-level BPE tokenizer is
trained on them first with `lmforge.pipelines.tokenizer.train_tokenizer` (not timed).

lmforge: what `tokenize.run` runs on the cluster: `TokenizeDocs` through `map_batches`
(batches of `DOCS_PER_BATCH` documents, an autoscaling pool of actors; each document's ids,
count, split and sample key), then `pack_batch` on the same batches, materialized in the
object store. The documents enter as Arrow blocks of exactly one
batch each, so both sides cut the same batches.
Baseline: `tok(texts)` (the Hugging Face fast tokenizer, multi-threaded itself; its
thread pool is capped at the cores Ray gets, through RAYON_RS_NUM_CPUS), then
`lmforge.pipelines.packing.pack` on the same batches of documents.
Agreement, row by row: both must yield the same packed sequences, batch by batch (same
number of rows, the same token ids and document starts in each); the script prints the
first differences and exits 1 when any is found. Speed goal: lmforge at least as fast as
the baseline on the same cores (ratio >= 1); missing it is printed but does not fail the
run.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import harness

SPEED_GOAL = 1.0  # lmforge / baseline packed tokens/s, both on RAY_CPUS cores


PackedRow = tuple[tuple[int, ...], tuple[int, ...]]  # (input_ids, doc_starts) of one row


def rows_of(table: Any) -> list[PackedRow]:
    return [
        (tuple(ids), tuple(starts))
        for ids, starts in zip(
            table["input_ids"].to_pylist(), table["doc_starts"].to_pylist(), strict=True
        )
    ]


def compare_sequences(lm_tables: list[Any], base_tables: list[Any]) -> list[str]:
    """What differs between the two sides' packed sequences, row by row (empty: the same).

    The baseline's tables come in batch order; Ray Data may hand lmforge's back in another
    order, so each lmforge table is paired with the baseline batch whose first row it
    shares (one table per batch on both sides), the rest in the order they came, then
    compared row by row: token ids and document starts. Lists the first five differences.
    """
    base = [rows_of(t) for t in base_tables]
    lm = [rows_of(t) for t in lm_tables]
    by_first: dict[PackedRow | None, list[int]] = {}
    for k, rows in enumerate(base):
        by_first.setdefault(rows[0] if rows else None, []).append(k)
    pairs: list[tuple[int | None, int | None]] = []  # (lmforge table, baseline batch)
    unpaired = []
    for j, rows in enumerate(lm):
        candidates = by_first.get(rows[0] if rows else None)
        if candidates:
            pairs.append((j, candidates.pop(0)))
        else:
            unpaired.append(j)
    left = sorted(k for ks in by_first.values() for k in ks)
    n = max(len(unpaired), len(left))
    pairs += [
        (unpaired[i] if i < len(unpaired) else None, left[i] if i < len(left) else None)
        for i in range(n)
    ]
    notes, differ = [], 0
    for j, k in pairs:
        a_rows = lm[j] if j is not None else []
        b_rows = base[k] if k is not None else []
        for r in range(max(len(a_rows), len(b_rows))):
            a = a_rows[r] if r < len(a_rows) else None
            b = b_rows[r] if r < len(b_rows) else None
            if a == b:
                continue
            differ += 1
            if len(notes) < 5:
                where = f"batch {k}" if k is not None else f"lmforge table {j} (no batch)"
                notes.append(f"{where} row {r}: {_difference(a, b)}")
    if unpaired or left:
        notes.append(f"{n} batches paired by order: no lmforge table starts with their first row")
    if differ:
        notes.append(f"{differ} packed sequences differ")
    return notes


def _difference(a: PackedRow | None, b: PackedRow | None) -> str:
    if a is None or b is None:
        return f"only in {'the baseline' if a is None else 'lmforge'}"
    if a[0] != b[0]:
        i = next((i for i, (x, y) in enumerate(zip(a[0], b[0], strict=False)) if x != y), 0)
        return (
            f"token ids differ from position {i}: lmforge {list(a[0][i : i + 8])}, "
            f"baseline {list(b[0][i : i + 8])}"
        )
    return f"document starts differ: lmforge {list(a[1])}, baseline {list(b[1])}"


def run_lmforge(chunks: list[list[str]], tok: Any, seq_len: int) -> tuple[float, list[Any]]:
    import pyarrow as pa
    import ray
    import ray.data

    from lmforge.pipelines.mixture import SOURCE, tokenize_documents
    from lmforge.pipelines.packing import DOCS_PER_BATCH, pack_batch

    sw = harness.Stopwatch()
    with sw.span("run"):
        blocks = [
            pa.table(
                {"id": [f"{k}-{i}" for i in range(len(c))], "text": c, SOURCE: ["docs"] * len(c)}
            )
            for k, c in enumerate(chunks)
        ]
        docs = ray.data.from_arrow(blocks)
        ids = tokenize_documents(docs, tok, 0.0, 0)  # the stage's own calls
        seqs = ids.map_batches(
            pack_batch,
            fn_args=(tok.eos_token_id, seq_len),
            batch_size=DOCS_PER_BATCH,
            batch_format="pyarrow",
        ).materialize()
    tables = [ray.get(ref) for ref in seqs.to_arrow_refs()]
    return sw["run"], tables


def run_baseline(chunks: list[list[str]], tok: Any, seq_len: int) -> tuple[float, list[Any]]:
    from lmforge.pipelines.packing import pack

    sw = harness.Stopwatch()
    with sw.span("run"):
        texts = [t for c in chunks for t in c]
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        tables, start = [], 0
        for c in chunks:
            tables.append(pack(ids[start : start + len(c)], tok.eos_token_id, seq_len))
            start += len(c)
    return sw["run"], tables


def main() -> int:
    from lmforge.pipelines.packing import DOCS_PER_BATCH

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=30_000, help="documents")
    ap.add_argument("--seq-len", type=int, default=256, help="tokens per packed sequence")
    ap.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size")
    ap.add_argument("--tokenizer-docs", type=int, default=10_000, help="docs to train BPE on")
    args = ap.parse_args()
    # the tokenizers thread pool reads this once; Ray's workers inherit it too
    os.environ.setdefault("RAYON_RS_NUM_CPUS", str(harness.RAY_CPUS))

    from lmforge.pipelines.tokenizer import train_tokenizer

    sw = harness.Stopwatch()
    texts = [d["text"] for d in harness.docstrings(args.size)]
    with sw.span("tokenizer"):
        tok = train_tokenizer(texts[: args.tokenizer_docs], args.vocab_size)
    chunks = [texts[i : i + DOCS_PER_BATCH] for i in range(0, len(texts), DOCS_PER_BATCH)]
    n_chars = sum(len(t) for t in texts)
    print(
        f"input: {len(texts):,} documents, {n_chars / 1e6:.1f}M characters, {len(chunks)} batches "
        f"of {DOCS_PER_BATCH}; tokenizer trained in {sw['tokenizer']:.1f} s (not timed)"
    )

    t_base, base_tables = run_baseline(chunks, tok, args.seq_len)
    t_ray = harness.start_ray()
    try:
        t_lm, lm_tables = run_lmforge(chunks, tok, args.seq_len)
    finally:
        harness.stop_ray()

    n_lm = sum(t.num_rows for t in lm_tables)
    n_base = sum(t.num_rows for t in base_tables)
    notes = compare_sequences(lm_tables, base_tables)
    tokens = n_base * args.seq_len  # packed tokens written (the batch tails are dropped)
    print(f"Ray startup (not timed below): {t_ray:.1f} s")
    harness.table(
        [
            ("lmforge TokenizeDocs + pack (Ray Data)", str(harness.RAY_CPUS), harness.fmt(t_lm, 2),
             f"{n_lm:,}", harness.fmt(n_lm * args.seq_len / t_lm, 0)),
            ("transformers tok(texts) + pack", os.environ["RAYON_RS_NUM_CPUS"], harness.fmt(t_base, 2),
             f"{n_base:,}", harness.fmt(tokens / t_base, 0)),
        ],
        ("", "cores", "seconds", "sequences", "tokens/s"),
    )  # fmt: skip
    agree = n_lm == n_base and not notes
    print(
        f"agreement: same number of sequences={n_lm == n_base} ({n_lm:,} vs {n_base:,}), "
        f"every sequence's token ids and document starts equal={not notes}"
    )
    for note in notes:
        print(f"  MISMATCH {note}")
    return harness.result(
        "tokenize_throughput",
        n_lm * args.seq_len / t_lm,
        tokens / t_base,
        "tokens/s",
        agree=agree,
        goal=SPEED_GOAL,
    )


if __name__ == "__main__":
    raise SystemExit(main())
