"""pretrain throughput: `lmforge.jobs.pretrain.run` (Ray Train + DeepSpeed ZeRO) vs a plain
single-process PyTorch loop on the same model, data, batch and steps.

    python benchmarks/train_throughput.py [--size 4000] [--steps 30] [--preset tiny]

Input: token shards made on the spot by lmforge's `tokenize` stage from the built-in
docstrings (of the first `--size`, those of 120+ characters); not timed.

lmforge: `pretrain.run` with `--workers` workers of `--cpus-per-worker` CPUs, ZeRO
`--zero-stage`, `--micro-batch` sequences per worker. Its figure is read from the run's
own `tokens_per_s` metric (logged every `--window` steps): the steady state is the
token-weighted rate of the windows after the first.
Baseline: one process, the same `LlamaForCausalLM` config and seed, AdamW with the same
parameter groups, betas and schedule, gradient clipping, global batch
(`workers x micro-batch` sequences of `seq_len`) and steps, torch using as many threads
as Ray has CPUs; its steady state excludes the first `--window` steps.
Agreement: the same number of tokens trained on, as each side reports what it consumed:
the tokens the baseline loop actually fed to its model (the sum of `x.numel()` over the
batches it iterated) against lmforge's `tokens` metric in the MLflow run (its last value)
and the `final_tokens` of the stage result; and validation loss after training within
10% (same initial weights, different data order, so close but not equal). Either failing
prints the figures and exits 1. Speed goal: lmforge at least as fast as the plain loop
(ratio >= 1); missing it is printed but does not fail the run.

On a few CPU cores the baseline is expected to win (ZeRO's collectives over gloo and Ray
Data's streaming cost more than they save here); the script exists so that the same
measurement can be run on GPUs (`--use-gpu`).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

import harness

SPEED_GOAL = 1.0  # lmforge / baseline steady tokens/s (on CPUs expected to be missed)


def make_tokens(tmp: Path, args: argparse.Namespace) -> Path:
    """Token shards of docstrings of 120+ characters, by lmforge's `tokenize` (not timed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmforge.jobs import tokenize

    docs, tokens = tmp / "docs", tmp / "tokens"
    docs.mkdir()
    kept = [d for d in harness.docstrings(args.size) if len(d["text"]) >= 120]
    table = pa.table({"id": [d["id"] for d in kept], "text": [d["text"] for d in kept]})
    pq.write_table(table, docs / "part-0.parquet")
    sets = [
        f"tokenize.vocab_size={args.vocab_size}",
        f"tokenize.seq_len={args.seq_len}",
        "tokenize.val_fraction=0.05",
    ]
    tokenize.run(harness.recipe(tmp, "tokenize", [str(docs)], str(tokens), *sets))
    return tokens


def pretrain_sets(args: argparse.Namespace) -> list[str]:
    return [
        f"pretrain.preset={args.preset}",
        f"pretrain.num_workers={args.workers}",
        f"pretrain.cpus_per_worker={args.cpus_per_worker}",
        f"pretrain.use_gpu={str(args.use_gpu).lower()}",
        f"pretrain.zero_stage={args.zero_stage}",
        f"pretrain.micro_batch_size={args.micro_batch}",
        f"pretrain.max_steps={args.steps}",
        "pretrain.warmup_steps=5",
        f"pretrain.log_every={args.window}",
        f"pretrain.eval_every={args.steps}",  # one validation pass, at the end
        f"pretrain.eval_batches={args.eval_batches}",
        f"pretrain.checkpoint_every={args.steps + 1}",  # no checkpoint inside the loop
    ]


def run_lmforge(tmp: Path, tokens: Path, args: argparse.Namespace) -> dict[str, float]:
    """Run the stage; its figures come from the metrics rank 0 logged to MLflow."""
    from lmforge.jobs import pretrain
    from lmforge.platform import tracking

    r = harness.recipe(tmp, "pretrain", [str(tokens)], str(tmp / "pretrain"), *pretrain_sets(args))
    harness.prepare_mlflow(r)
    sw = harness.Stopwatch()
    with sw.span("run"):
        res = pretrain.run(r)
    history = {
        key: [v for _, v in tracking.metric_history(res.run_id, key)]
        for key in ("tokens_per_s", "tokens", "train_loss", "val_loss")
    }
    rates = history["tokens_per_s"]
    steady = rates[1:] or rates  # the first window holds Ray Data's start of streaming
    out = {
        "stage_s": sw["run"],
        "first_window_tokens_per_s": rates[0],
        # every window holds the same tokens: the overall rate is the harmonic mean
        "steady_tokens_per_s": len(steady) / sum(1 / v for v in steady),
        **{f"final_{k}": v[-1] for k, v in history.items() if v},
    }
    out["result_final_tokens"] = res.metrics.get("final_tokens", math.nan)
    # what the stage itself returns as final metrics, for comparison with the history
    for key in ("final_tokens", "final_train_loss", "final_val_loss", "final_tokens_per_s"):
        if res.metrics.get(key) != out.get(key):
            print(
                f"note: StageResult.metrics[{key!r}] = {res.metrics.get(key)}, but the run's "
                f"last logged value is {out.get(key)}"
            )
    return out


def load_split(tokens: Path, split: str) -> Any:
    import numpy as np

    from lmforge.pipelines.outputs import parquet_dataset

    ds = parquet_dataset(str(tokens / split))
    if ds is None:
        return np.zeros((0, 0), dtype=np.int64)
    return np.stack(ds.to_table(columns=["input_ids"])["input_ids"].to_numpy(zero_copy_only=False))


def run_baseline(tokens: Path, args: argparse.Namespace) -> dict[str, float]:
    """The same training as one plain PyTorch loop."""
    import time

    import torch
    from transformers import LlamaForCausalLM

    from lmforge.platform.hf_model import load_tokenizer
    from lmforge.train.config import PretrainConfig
    from lmforge.train.loop import lr_schedule
    from lmforge.train.presets import get_preset

    torch.set_num_threads(harness.RAY_CPUS)
    device = torch.device("cuda" if args.use_gpu else "cpu")
    defaults = PretrainConfig()
    tok = load_tokenizer(str(tokens / "tokenizer"))
    config = get_preset(args.preset).llama_config(
        vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    torch.manual_seed(defaults.seed)  # as every lmforge rank does: the same initial weights
    model: Any = LlamaForCausalLM(config)
    model.to(device)
    groups = [
        {
            "params": [p for p in model.parameters() if p.ndim >= 2],
            "weight_decay": defaults.weight_decay,
        },
        {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=defaults.lr, betas=(0.9, 0.95), fused=False)
    sched = lr_schedule(
        opt, defaults.model_copy(update={"warmup_steps": 5, "max_steps": args.steps})
    )

    train = torch.from_numpy(load_split(tokens, "train")).long()  # (N, T)
    batch = args.workers * args.micro_batch
    if len(train) < batch:
        raise SystemExit(f"only {len(train)} training sequences; raise --size")
    per_epoch = len(train) // batch
    times = []
    consumed = 0  # tokens actually fed to the model, counted from the batches
    model.train()
    for step in range(args.steps):
        t0 = time.perf_counter()
        i = step % per_epoch
        x = train[i * batch : (i + 1) * batch].to(device)  # (B, T)
        consumed += x.numel()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), defaults.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_value = loss.item()  # waits for the device, as lmforge's loop does
        times.append(time.perf_counter() - t0)

    val = torch.from_numpy(load_split(tokens, "val")).long()
    n_val = args.eval_batches * batch  # what lmforge's ranks evaluate together
    model.eval()
    with torch.no_grad():
        losses = [
            model(input_ids=v.to(device), labels=v.to(device)).loss.item()
            for v in val[:n_val].split(args.micro_batch)
            if len(v) == args.micro_batch
        ]
    tokens_per_step = batch * args.seq_len
    steady = times[args.window :] or times
    return {
        "steps": float(args.steps),
        "consumed_tokens": float(consumed),
        "final_train_loss": loss_value,
        "final_val_loss": sum(losses) / len(losses) if losses else float("nan"),
        "stage_s": sum(times),
        "first_window_tokens_per_s": len(times[: args.window])
        * tokens_per_step
        / sum(times[: args.window]),
        "steady_tokens_per_s": len(steady) * tokens_per_step / sum(steady),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4000, help="docstrings tokenized for training")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps")
    ap.add_argument("--window", type=int, default=5, help="steps per rate window; first skipped")
    ap.add_argument("--preset", default="tiny", help="model preset (tiny, demo, 1b, ...)")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    ap.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size")
    ap.add_argument("--workers", type=int, default=2, help="Ray Train workers")
    ap.add_argument("--cpus-per-worker", type=float, default=0.5, help="CPUs Ray reserves each")
    ap.add_argument("--micro-batch", type=int, default=8, help="sequences per worker per step")
    ap.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2, 3])
    ap.add_argument("--eval-batches", type=int, default=2, help="validation micro-batches/rank")
    ap.add_argument("--use-gpu", action="store_true", help="one GPU per worker; baseline on GPU")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as d:
        tmp = Path(d)
        sw = harness.Stopwatch()
        t_ray = harness.start_ray()
        try:
            with sw.span("prepare"):
                tokens = make_tokens(tmp, args)
            lm = run_lmforge(tmp, tokens, args)
        finally:
            harness.stop_ray()
        base = run_baseline(tokens, args)

    global_batch = args.workers * args.micro_batch
    print(
        f"setup (not timed below): Ray startup {t_ray:.1f} s, tokenize "
        f"{sw['prepare']:.1f} s; preset {args.preset}, global batch {global_batch} x "
        f"{args.seq_len} tokens, {args.steps} steps; lmforge stage wall time (Ray Train "
        f"start, DeepSpeed init, export) {lm['stage_s']:.1f} s"
    )
    harness.table(
        [
            (f"lmforge pretrain ({args.workers} workers, ZeRO-{args.zero_stage})",
             harness.fmt(lm["first_window_tokens_per_s"], 0),
             harness.fmt(lm["steady_tokens_per_s"], 0),
             harness.fmt(lm.get("final_train_loss", math.nan), 3),
             harness.fmt(lm.get("final_val_loss", math.nan), 3)),
            (f"plain PyTorch loop ({harness.RAY_CPUS} threads)",
             harness.fmt(base["first_window_tokens_per_s"], 0),
             harness.fmt(base["steady_tokens_per_s"], 0),
             harness.fmt(base["final_train_loss"], 3),
             harness.fmt(base["final_val_loss"], 3)),
        ],
        ("", "first window tok/s", "steady tok/s", "last train loss", "val loss"),
    )  # fmt: skip
    # what each side reports it consumed: lmforge's run and stage result, the baseline's count
    t_mlflow = lm.get("final_tokens", math.nan)
    t_result, t_base = lm["result_final_tokens"], base["consumed_tokens"]
    same_tokens = t_mlflow == t_base and t_result == t_base  # False when either is nan
    v_lm, v_base = lm.get("final_val_loss", math.nan), base["final_val_loss"]
    close = abs(v_lm - v_base) <= 0.1 * v_base  # False when either is nan
    print(
        f"agreement: same tokens trained on={same_tokens} (lmforge: MLflow `tokens` "
        f"{t_mlflow:,.0f}, stage result final_tokens {t_result:,.0f}; baseline fed "
        f"{t_base:,.0f}; the plan, {args.steps} steps x {global_batch} x {args.seq_len}, is "
        f"{args.steps * global_batch * args.seq_len:,}), val loss within 10%={close} "
        f"({v_lm:.3f} vs {v_base:.3f})"
    )
    return harness.result(
        "train_throughput",
        lm["steady_tokens_per_s"],
        base["steady_tokens_per_s"],
        "tokens/s",
        agree=same_tokens and close,
        goal=SPEED_GOAL,
    )


if __name__ == "__main__":
    raise SystemExit(main())
