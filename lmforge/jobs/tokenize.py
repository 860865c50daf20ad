"""`tokenize`: curated text -> a BPE tokenizer and packed token shards.

    python -m lmforge.jobs.tokenize --input CURATED [--input SYNTHETIC] --output DIR

Output: `tokenizer/` (Hugging Face files), `train/` and `val/` (Parquet rows of
`seq_len` token ids), `manifest.json` (documents, sequences and tokens per split).
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lmforge.jobs.common import StageResult, check_inputs, stage_context
from lmforge.pipelines.outputs import parquet_dataset
from lmforge.pipelines.packing import TokenizePack, is_validation
from lmforge.pipelines.tokenizer import train_tokenizer
from lmforge.platform import storage, tracking
from lmforge.platform.config import Recipe

DOCS_PER_BATCH = 2048  # bigger batches waste less in the tail of each packed stream


def validate(recipe: Recipe) -> None:
    check_inputs(recipe.tokenize.input, what="tokenize")


def read_documents(inputs: list[str]) -> Any:
    """`id` and `text` of every kept row of the given stage outputs (or Parquet files)."""
    import ray.data

    parts = []
    for uri in inputs:
        folder = storage.join(uri, "kept") if storage.read_manifest(uri) else uri
        ds = ray.data.read_parquet(folder, file_extensions=["parquet"]).select_columns(
            ["id", "text"]
        )
        parts.append(ds)
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def _split(batch: pa.Table, fraction: float, want_val: bool) -> pa.Table:
    mask = [is_validation(i, fraction) == want_val for i in batch["id"].to_pylist()]
    return batch.filter(pa.array(mask, pa.bool_()))


def run(recipe: Recipe, *, parent_run_id: str | None = None) -> StageResult:
    cfg = recipe.tokenize
    assert cfg.output is not None
    inputs = [storage.absolute(u) for u in cfg.input]
    output = storage.absolute(cfg.output)
    validate(recipe)
    with stage_context("tokenize", recipe, cfg.model_dump(), parent_run_id=parent_run_id) as run_id:
        import ray.data

        tracking.record_inputs(inputs)
        storage.remove(output)
        docs = read_documents(inputs).materialize()
        n_docs = docs.count()

        # 1) the tokenizer, trained on a sample streamed to the driver
        t0 = time.perf_counter()
        sample = (r["text"] for r in docs.limit(cfg.tokenizer_train_docs).iter_rows())
        tok = train_tokenizer(sample, cfg.vocab_size)
        tok_dir = storage.join(output, "tokenizer")
        _save_tokenizer(tok, tok_dir)
        t_tok = time.perf_counter() - t0

        # 2) tokenize and pack each split on the cluster
        counts: dict[str, Any] = {}
        for split, want_val in (("train", False), ("val", True)):
            part = docs.map_batches(
                _split, fn_args=(cfg.val_fraction, want_val), batch_format="pyarrow"
            )
            n_split = part.count()
            seqs = part.map_batches(
                TokenizePack,
                fn_constructor_kwargs={
                    "tokenizer_json": tok.backend_tokenizer.to_str(),
                    "eos_id": tok.eos_token_id,
                    "seq_len": cfg.seq_len,
                },
                batch_size=DOCS_PER_BATCH,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=4),
            )
            seqs.write_parquet(storage.join(output, split), min_rows_per_file=50_000)
            counts[split] = _split_counts(storage.join(output, split), n_split, cfg.seq_len)

        manifest = {
            "stage": "tokenize",
            "inputs": inputs,
            "mlflow_run_id": run_id,
            "documents": n_docs,
            "vocab_size": len(tok),
            "seq_len": cfg.seq_len,
            "eos_token_id": tok.eos_token_id,
            "splits": counts,
            "tokenizer": tok_dir,
        }
        storage.write_manifest(output, manifest)
        metrics = {
            "documents": float(n_docs),
            "vocab_size": float(len(tok)),
            "tokenizer_train_s": t_tok,
            "sequences": float(counts["train"]["sequences"]),
            "tokens": float(counts["train"]["tokens"]),
            "val_sequences": float(counts["val"]["sequences"]),
            "val_tokens": float(counts["val"]["tokens"]),
        }
        tracking.log_metrics(metrics)
        tracking.log_dict(manifest, "manifest.json")
        tracking.log_artifact(tok_dir, "tokenizer")
        tracking.set_tags({"lmforge.output": output})
    if counts["train"]["sequences"] == 0:
        raise RuntimeError(
            f"tokenize: no training sequence of {cfg.seq_len} tokens could be packed from "
            f"{n_docs} documents; lower tokenize.seq_len or add data"
        )
    return StageResult("tokenize", run_id, output, metrics, {"manifest": manifest})


def _save_tokenizer(tok: Any, uri: str) -> None:
    import tempfile

    if not storage.is_remote(uri):
        tok.save_pretrained(uri)
        return
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        fs, path = storage.filesystem(uri)
        import pyarrow.fs as pafs

        pafs.copy_files(d, path, destination_filesystem=fs)


def _split_counts(folder: str, docs_read: int, seq_len: int) -> dict[str, int]:
    dataset = parquet_dataset(folder)
    if dataset is None:
        return {"documents": docs_read, "documents_packed": 0, "sequences": 0, "tokens": 0}
    starts = dataset.to_table(columns=["doc_starts"])["doc_starts"]
    packed = int(pc.sum(pc.list_value_length(starts)).as_py() or 0)
    n = dataset.count_rows()
    return {
        "documents": docs_read,
        "documents_packed": packed,  # the rest started in a batch's unpacked tail
        "sequences": n,
        "tokens": n * seq_len,
    }


if __name__ == "__main__":
    from lmforge.jobs.cli import stage_main

    stage_main("tokenize")
