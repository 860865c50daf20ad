"""`tokenize`: curated text -> a BPE tokenizer and packed token shards.

    python -m lmforge.jobs.tokenize --input CURATED [--input SYNTHETIC] --output DIR

Output: `tokenizer/` (Hugging Face files), `train/` and `val/` (Parquet rows of
`seq_len` token ids, plus a `loss_mask` of the same length with `tokenize.loss_on:
assistant`: true where the token is a target, false on system and user turns and role
headers), `manifest.json` (documents, sequences, tokens and loss targets per split; the
`mixture` asked for, or null for the natural mix; `loss_on`; per split and source the
documents, tokens in the shards, realized share, the planned tokens and share before
packing and, for train, repeats; the `digest` of the shards of both splits and the
tokenizer files). The mixture is `lmforge/pipelines/mixture.py`; encoding and packing run
on `lmforge/pipelines/token_pool.py`.
"""

from __future__ import annotations

import time
from typing import Any

from lmforge.jobs import reuse
from lmforge.jobs.common import StageResult, check_inputs, stage_context
from lmforge.jobs.recipe import Recipe
from lmforge.pipelines import mixture
from lmforge.pipelines.packing import check_text_column, split_counts, write_packed
from lmforge.pipelines.token_pool import TokenPool
from lmforge.pipelines.tokenizer import save_tokenizer, tokenizer_sample, train_tokenizer
from lmforge.platform import digest, storage, tracking


def validate(recipe: Recipe) -> None:
    cfg = recipe.tokenize
    check_inputs(cfg.input, what="tokenize")
    for uri in cfg.input:
        check_text_column(uri)
    mixture.source_labels(cfg.input, cfg.mixture, cfg.groups)


def run(recipe: Recipe, *, parent_run_id: str | None = None) -> StageResult:
    import ray.data

    cfg = recipe.tokenize
    assert cfg.output is not None
    inputs = [storage.absolute(u) for u in cfg.input]
    output = storage.absolute(cfg.output)
    validate(recipe)
    labels = mixture.source_labels(cfg.input, cfg.mixture, cfg.groups)
    weights = mixture.source_weights(labels, cfg.mixture) if cfg.mixture else None
    masked = cfg.loss_on == "assistant"
    fp = reuse.fingerprint("tokenize", recipe)
    context = stage_context("tokenize", recipe, cfg.model_dump(), parent_run_id=parent_run_id)
    with context as run_id, mixture.in_order():
        tracking.record_inputs(inputs, digests=fp.input_digests)
        storage.remove(output)
        by_uri = {storage.absolute(u): name for u, name in labels.items()}
        docs = mixture.labelled_documents(by_uri).materialize()
        n_docs = docs.count()

        # 1) the tokenizer, trained on a sample collected on the driver (with a mixture:
        # drawn across sources by the weights, so a small source still gets its tokens);
        # the tokenizing actors start meanwhile (they take every CPU: Ray Data is done)
        t0 = time.perf_counter()
        if weights is None:
            sampled = docs.limit(cfg.tokenizer_train_docs)
        else:
            sampled = tokenizer_sample(docs, weights, cfg.tokenizer_train_docs, cfg.seed)
        texts = [r["text"] for r in sampled.iter_rows()]
        with TokenPool() as pool:
            tok = train_tokenizer(texts, cfg.vocab_size)
            del texts
            tok_dir = storage.join(output, "tokenizer")
            save_tokenizer(tok, tok_dir)
            t_tok = time.perf_counter() - t0

            # 2) every document tokenized once; split by document, then the plan of
            # repeats from the train documents' token counts (validation: written once)
            tokens, table = pool.tokenize(
                docs, tok, cfg.val_fraction, cfg.seed, loss_on=cfg.loss_on
            )
            val_mask = table["val"].to_numpy(zero_copy_only=False)
            split_docs = {"train": table.filter(~val_mask), "val": table.filter(val_mask)}
            plan, epochs = mixture.plan(split_docs["train"], weights, cfg.mixture_tokens)
            plans = {"train": plan, "val": mixture.Plan({}, {})}  # val: once each

            # 3) each split packed by the same actors, in the object store
            packed = {  # split -> (refs of packed blocks, per-source tokens kept)
                split: pool.pack(
                    tokens, validation=split == "val", plan=plans[split], seq_len=cfg.seq_len
                )
                for split in ("train", "val")
            }
        del tokens

        # 4) written by Ray Data, once the actors have freed their CPUs
        counts: dict[str, Any] = {}
        sources: dict[str, Any] = {}
        for split, (rows, kept) in packed.items():
            folder = storage.join(output, split)
            write_packed(ray.data.from_arrow_refs(rows), folder)
            counts[split] = split_counts(folder, split_docs[split].num_rows, cfg.seq_len)
            planned = mixture.written(split_docs[split], plans[split])
            sources[split] = mixture.figures(planned, kept)
        for s, fig in sources["train"].items():
            fig["repeats"] = epochs.get(s, 1.0)

        manifest = {
            "stage": "tokenize",
            "inputs": inputs,
            "mlflow_run_id": run_id,
            "documents": n_docs,
            "vocab_size": len(tok),
            "seq_len": cfg.seq_len,
            "eos_token_id": tok.eos_token_id,
            "mixture": None
            if weights is None
            else {"weights": weights, "seed": cfg.seed, "tokens": cfg.mixture_tokens},
            "loss_on": cfg.loss_on,  # assistant: shards carry `loss_mask`
            "sources": sources,  # per split and source: documents, tokens, share (+repeats)
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
        if masked:
            metrics["loss_tokens"] = float(counts["train"]["loss_tokens"])
        for split, per_source in sources.items():
            prefix = "mix" if split == "train" else "mix_val"
            for s, fig in per_source.items():
                for key in ("documents", "tokens", "share", "repeats", "loss_tokens"):
                    if key in fig:
                        metrics[f"{prefix}.{mixture.metric_name(s)}.{key}"] = float(fig[key])
        tracking.log_metrics(metrics)
        tracking.log_dict(manifest, "manifest.json")
        tracking.log_figure(mixture.plot(sources["train"], weights), "mixture.png")
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
