"""tokenize throughput: lmforge's Ray Data tokenize-and-pack vs one process with the
`transformers` fast tokenizer and the same packing.

    python benchmarks/tokenize_throughput.py [--size 30000] [--seq-len 256] [--vocab-size 4096]

Input: `--size` documents of the built-in docstring corpus. A byte-level BPE tokenizer is
trained on them first with `lmforge.pipelines.tokenizer.train_tokenizer` (not timed).

lmforge: what `tokenize.run` runs on the cluster, `TokenizePack` through `map_batches`
(batches of `DOCS_PER_BATCH` documents, an autoscaling pool of actors), materialized in
the object store. The documents enter as Arrow blocks of exactly one
batch each, so both sides cut the same batches.
Baseline: `tok(texts)` (the Hugging Face fast tokenizer, multi-threaded itself; its
thread pool is capped at the cores Ray gets, through RAYON_RS_NUM_CPUS), then
`lmforge.pipelines.packing.pack` on the same batches of documents.
Both must yield the same packed sequences (same count, same token ids).
"""

from __future__ import annotations

import argparse
import hashlib
import os
from typing import Any

import harness


def fingerprint(tables: list[Any]) -> tuple[int, str]:
    """(rows, digest of the sorted row digests): equal for the same rows in any order."""
    digests = []
    for t in tables:
        for ids, starts in zip(
            t["input_ids"].to_pylist(), t["doc_starts"].to_pylist(), strict=True
        ):
            digests.append(hashlib.blake2b(repr((ids, starts)).encode(), digest_size=16).digest())
    return len(digests), hashlib.blake2b(b"".join(sorted(digests))).hexdigest()[:16]


def run_lmforge(chunks: list[list[str]], tok: Any, seq_len: int) -> tuple[float, list[Any]]:
    import pyarrow as pa
    import ray
    import ray.data

    from lmforge.pipelines.packing import DOCS_PER_BATCH, TokenizePack

    sw = harness.Stopwatch()
    with sw.span("run"):
        docs = ray.data.from_arrow([pa.table({"text": c}) for c in chunks])
        seqs = docs.map_batches(
            TokenizePack,
            fn_constructor_kwargs={
                "tokenizer_json": tok.backend_tokenizer.to_str(),
                "eos_id": tok.eos_token_id,
                "seq_len": seq_len,
            },
            batch_size=DOCS_PER_BATCH,
            batch_format="pyarrow",
            concurrency=(1, 4),  # as in `tokenize.run`
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

    n_lm, fp_lm = fingerprint(lm_tables)
    n_base, fp_base = fingerprint(base_tables)
    tokens = n_base * args.seq_len  # packed tokens written (the batch tails are dropped)
    print(f"Ray startup (not timed below): {t_ray:.1f} s")
    harness.table(
        [
            ("lmforge TokenizePack (Ray Data)", str(harness.RAY_CPUS), harness.fmt(t_lm, 2),
             f"{n_lm:,}", harness.fmt(n_lm * args.seq_len / t_lm, 0)),
            ("transformers tok(texts) + pack", os.environ["RAYON_RS_NUM_CPUS"], harness.fmt(t_base, 2),
             f"{n_base:,}", harness.fmt(tokens / t_base, 0)),
        ],
        ("", "cores", "seconds", "sequences", "tokens/s"),
    )  # fmt: skip
    agree = n_lm == n_base and fp_lm == fp_base
    print(
        f"agreement: same number of sequences={n_lm == n_base} ({n_lm:,} vs {n_base:,}), "
        f"same token ids={fp_lm == fp_base} ({fp_lm} vs {fp_base})"
    )
    return harness.result(
        "tokenize_throughput",
        n_lm * args.seq_len / t_lm,
        tokens / t_base,
        "tokens/s",
        agree=agree,
    )


if __name__ == "__main__":
    raise SystemExit(main())
