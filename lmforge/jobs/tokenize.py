"""`tokenize`: curated text -> a BPE tokenizer and packed token shards.

    python -m lmforge.jobs.tokenize --input CURATED [--input SYNTHETIC] --output DIR

Output: `tokenizer/` (Hugging Face files), `train/` and `val/` (Parquet rows of
`seq_len` token ids), `manifest.json` (documents, sequences and tokens per split, and the
`digest` of the shards of both splits and the tokenizer files).
"""

from __future__ import annotations

import time
from typing import Any

from lmforge.jobs import reuse
from lmforge.jobs.common import StageResult, check_inputs, stage_context
from lmforge.jobs.recipe import Recipe
from lmforge.pipelines.packing import read_documents, write_split
from lmforge.pipelines.tokenizer import save_tokenizer, train_tokenizer
from lmforge.platform import digest, storage, tracking


def validate(recipe: Recipe) -> None:
    check_inputs(recipe.tokenize.input, what="tokenize")


def run(recipe: Recipe, *, parent_run_id: str | None = None) -> StageResult:
    cfg = recipe.tokenize
    assert cfg.output is not None
    inputs = [storage.absolute(u) for u in cfg.input]
    output = storage.absolute(cfg.output)
    validate(recipe)
    fp = reuse.fingerprint("tokenize", recipe)
    with stage_context("tokenize", recipe, cfg.model_dump(), parent_run_id=parent_run_id) as run_id:
        tracking.record_inputs(inputs, digests=fp.input_digests)
        storage.remove(output)
        docs = read_documents(inputs).materialize()
        n_docs = docs.count()

        # 1) the tokenizer, trained on a sample streamed to the driver
        t0 = time.perf_counter()
        sample = (r["text"] for r in docs.limit(cfg.tokenizer_train_docs).iter_rows())
        tok = train_tokenizer(sample, cfg.vocab_size)
        tok_dir = storage.join(output, "tokenizer")
        save_tokenizer(tok, tok_dir)
        t_tok = time.perf_counter() - t0

        # 2) tokenize and pack each split on the cluster
        counts: dict[str, Any] = {}
        for split, validation in (("train", False), ("val", True)):
            counts[split] = write_split(
                docs,
                tok,
                storage.join(output, split),
                val_fraction=cfg.val_fraction,
                validation=validation,
                seq_len=cfg.seq_len,
            )

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
            "digest": shards_digest(output),
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
        tracking.record_output(output, manifest["digest"])
        if counts["train"]["sequences"] == 0:  # raised inside the run: it is marked FAILED
            raise RuntimeError(
                f"tokenize: no training sequence of {cfg.seq_len} tokens could be packed from "
                f"{n_docs} documents; lower tokenize.seq_len or add data"
            )
        reuse.finish(output, manifest, fp)
    return StageResult("tokenize", run_id, output, metrics, {"manifest": manifest})


def shards_digest(output: str) -> str:
    """The content of a tokenize output: the token rows of each split (in any file, any
    order) and the tokenizer's files."""
    parts: dict[str, str | None] = {
        split: digest.of_rows("rows", *digest.parquet_rows(storage.join(output, split)))
        for split in ("train", "val")
    }
    parts["tokenizer"] = digest.of_files(storage.join(output, "tokenizer"))
    return digest.combine(parts)


if __name__ == "__main__":
    from lmforge.jobs.command import stage_main

    stage_main("tokenize")
