"""tokenize throughput: the tokenize stage's tokenize-and-pack on its pool of Ray actors vs
bare `tokenizers` with the same packing in one process per core.

    python benchmarks/tokenize_throughput.py [--size 100000] [--seq-len 256] [--vocab-size 4096]

Input: `--size` documents of the built-in docstring corpus, written as Parquet files of
`DOCS_PER_BATCH` documents each (not timed). A byte-level BPE tokenizer is trained on the
first `--tokenizer-docs` with `lmforge.pipelines.tokenizer.train_tokenizer` (not timed).

lmforge: the calls `tokenize.run` makes, in its order. Before the clock, as in the stage,
`mixture.labelled_documents` reads the files into the object store (the stage reads them
once, for the tokenizer's sample and for this) and the `TokenPool` actors are started (the
stage starts them while it trains the tokenizer). Timed: `TokenPool.tokenize` (the
`TokenizeDocs` rows of every block, one actor per core, and the small table of every
document on the driver), `mixture.plan`, and `TokenPool.pack` of the train split, until
every packed block is in the object store. The validation fraction is 0, so every
document is packed once; nothing is written to disk (the baseline writes nothing either).

Baseline (timed the same way, while the same local Ray is up and idle): a
`multiprocessing` pool of one process per core, started
and warmed before the clock, each holding every file's `text` column as Arrow (read before
the clock, as lmforge's documents are in the object store). Each call takes one file's
texts as Python strings (as `TokenizeDocs` does with its block), encodes them with the
bare `tokenizers.Tokenizer` and the same call as `TokenizeDocs` (`encode_batch_fast` when
the installed `tokenizers` has it, `encode_batch` otherwise), with one Rust thread per
process, and packs them with `lmforge.pipelines.packing.pack_documents`. The packed table
and the tail after its last whole row (`packing.stream_tail`) come back to the parent,
which packs the files' tails together, in file order, as the stage carries its blocks'
tails (both sides leave less than one row unpacked).

Agreement, row by row: both sides must give the same packed sequences, batch by batch
(same number of rows, the same token ids and document starts in each). The script prints
the first differences and exits 1 when any is found. The two sides run in alternating
rounds (`--rounds`, default 3) and each side's fastest round is compared; every round is
printed. Speed goal: lmforge at least 0.8x
the baseline (issue 13); missing it is printed but does not fail the run. The time of
each lmforge phase is printed too, to show where the time goes.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

SPEED_GOAL = 0.8  # lmforge / baseline packed tokens/s, both on RAY_CPUS cores

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

    The baseline's tables come in file order; Ray Data may hand lmforge's back in another
    order, so each lmforge table is paired with the baseline batch whose first row it
    shares (one table per batch on both sides), the rest in the order they came, then
    compared row by row: token ids and document starts. Lists the first five differences.
    """
    base = [rows_of(t) for t in base_tables]
    lm = [rows_of(t) for t in lm_tables if t.num_rows]
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
    left = sorted(k for ks in by_first.values() for k in ks if base[k])
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


def run_lmforge(folder: Path, tok: Any, seq_len: int) -> tuple[dict[str, float], list[Any]]:
    import ray

    from lmforge.pipelines import mixture
    from lmforge.pipelines.token_pool import TokenPool

    sw = harness.Stopwatch()
    with mixture.in_order():
        # untimed, as the baseline's reading: the stage holds its documents in the object
        # store (read for the tokenizer's sample) and starts its actors while it trains
        # the tokenizer
        docs = mixture.labelled_documents({str(folder): "docs"}).materialize()
        with TokenPool() as pool:
            pool.wait_ready()
            with sw.span("total"):
                with sw.span("tokenize (actors)"):
                    tokens, table = pool.tokenize(docs, tok, 0.0, 0)
                with sw.span("driver: plan"):
                    plan, _ = mixture.plan(table, None, None)
                with sw.span("pack (actors)"):
                    refs, _ = pool.pack(tokens, validation=False, plan=plan, seq_len=seq_len)
                    ray.wait(refs, num_returns=len(refs), fetch_local=False)
    tables = [ray.get(ref) for ref in refs]
    return sw.spans, tables


_TOKENIZER: Any = None
_TEXTS: dict[str, Any] = {}  # file -> its `text` column (Arrow), as lmforge's blocks hold it


def _init_worker(tokenizer_json: str, files: list[str]) -> None:
    os.environ["RAYON_NUM_THREADS"] = "1"  # one process per core, one thread each
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    global _TOKENIZER
    _TOKENIZER = Tokenizer.from_str(tokenizer_json)
    for f in files:  # read before the clock, as lmforge's documents are
        _TEXTS[f] = pq.read_table(f, columns=["text"])["text"]


def _encode_and_pack(args: tuple[str, int, int]) -> tuple[Any, Any, Any]:
    import pyarrow as pa

    from lmforge.pipelines.packing import pack_documents, stream_tail, with_eos

    path, eos_id, seq_len = args
    encode = getattr(_TOKENIZER, "encode_batch_fast", _TOKENIZER.encode_batch)
    ids = [e.ids for e in encode(_TEXTS[path].to_pylist(), add_special_tokens=False)]
    docs = with_eos(pa.array(ids, pa.list_(pa.int32())), eos_id)
    pieces, _, _, begins = stream_tail(docs, seq_len)
    return pack_documents(docs, seq_len), pieces, begins


def run_baseline(files: list[Path], tok: Any, seq_len: int, pool: Any) -> tuple[float, list[Any]]:
    import numpy as np
    import pyarrow as pa

    from lmforge.pipelines.packing import pack_documents

    t0 = time.perf_counter()
    parts = pool.map(
        _encode_and_pack, [(str(f), tok.eos_token_id, seq_len) for f in files], chunksize=1
    )
    tails = pa.concat_arrays([p[1] for p in parts])
    begins = np.concatenate([p[2] for p in parts])
    tables = [p[0] for p in parts] + [pack_documents(tails, seq_len, begins=begins)]
    return time.perf_counter() - t0, tables


def write_inputs(texts: list[str], folder: Path, per_file: int) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = []
    for k, i in enumerate(range(0, len(texts), per_file)):
        part = texts[i : i + per_file]
        path = folder / f"part-{k:05d}.parquet"
        ids = [f"{k}-{j}" for j in range(len(part))]
        pq.write_table(pa.table({"id": ids, "text": part}), path)
        files.append(path)
    return files


def main() -> int:
    from lmforge.pipelines.packing import DOCS_PER_BATCH

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=100_000, help="documents")
    ap.add_argument("--seq-len", type=int, default=256, help="tokens per packed sequence")
    ap.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size")
    ap.add_argument("--tokenizer-docs", type=int, default=10_000, help="docs to train BPE on")
    ap.add_argument("--rounds", type=int, default=3, help="timed runs of each side, alternated")
    args = ap.parse_args()

    from lmforge.pipelines.tokenizer import train_tokenizer

    sw = harness.Stopwatch()
    with sw.span("input"):
        texts = [d["text"] for d in harness.docstrings(args.size)]
    with sw.span("tokenizer"):
        tok = train_tokenizer(texts[: args.tokenizer_docs], args.vocab_size)
    tmp = Path(tempfile.mkdtemp(prefix="lmforge-tokbench-"))
    files = write_inputs(texts, tmp, DOCS_PER_BATCH)
    n_chars = sum(len(t) for t in texts)
    print(
        f"input: {len(texts):,} documents, {n_chars / 1e6:.1f}M characters, {len(files)} "
        f"Parquet files of {DOCS_PER_BATCH}; made in {sw['input']:.0f} s, tokenizer trained "
        f"in {sw['tokenizer']:.1f} s (neither timed)"
    )

    # both sides run while the same local Ray is up (its daemons idle during the
    # baseline), in alternating rounds; each side's best round is compared (timeit's rule:
    # the other rounds measured the machine's noise, not the code)
    t_ray = harness.start_ray()
    base_times: list[float] = []
    lm_runs: list[dict[str, float]] = []
    try:
        ctx = mp.get_context("spawn")
        init = (tok.backend_tokenizer.to_str(), [str(f) for f in files])
        with ctx.Pool(harness.RAY_CPUS, _init_worker, init) as pool:
            run_baseline(files[:2], tok, args.seq_len, pool)  # warm: imports in each process
            for _ in range(args.rounds):
                t, base_tables = run_baseline(files, tok, args.seq_len, pool)
                base_times.append(t)
                spans, lm_tables = run_lmforge(tmp, tok, args.seq_len)
                lm_runs.append(spans)
    finally:
        harness.stop_ray()
    spans = min(lm_runs, key=lambda r: r["total"])
    t_lm, t_base = spans["total"], min(base_times)
    lm_times = ", ".join(f"{r['total']:.2f}" for r in lm_runs)
    base_list = ", ".join(f"{t:.2f}" for t in base_times)
    print(f"rounds: lmforge {lm_times} s; baseline {base_list} s (best of each compared)")

    n_lm = sum(t.num_rows for t in lm_tables)
    n_base = sum(t.num_rows for t in base_tables)
    notes = compare_sequences(lm_tables, base_tables)
    tokens = n_base * args.seq_len  # packed tokens written (under one row is left)
    print(f"Ray startup (not timed below): {t_ray:.1f} s")
    harness.table(
        [
            ("lmforge tokenize stage: TokenPool tokenize, plan, pack",
             str(harness.RAY_CPUS), harness.fmt(t_lm, 2), f"{n_lm:,}",
             harness.fmt(n_lm * args.seq_len / t_lm, 0)),
            ("bare tokenizers + pack, one process per core",
             str(harness.RAY_CPUS), harness.fmt(t_base, 2), f"{n_base:,}",
             harness.fmt(tokens / t_base, 0)),
        ],
        ("", "cores", "seconds", "sequences", "tokens/s"),
    )  # fmt: skip
    print("where lmforge's time goes:")
    for name, seconds in spans.items():
        if name != "total":
            print(f"  {name:<30} {seconds:6.2f} s  ({seconds / t_lm:4.0%})")
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
