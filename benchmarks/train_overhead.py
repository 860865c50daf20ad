"""pretrain overhead: `lmforge.jobs.pretrain.run` (Ray Train + DeepSpeed ZeRO) vs plain
PyTorch DDP under torchrun, on the same model, data, batch, optimizer and cores.

    python benchmarks/train_overhead.py [--size 4000] [--steps 30] [--preset demo] [--same-order]

Input: token shards made on the spot by lmforge's `tokenize` stage from the built-in
docstrings (those of 120+ characters among the first `--size`; `train_throughput.py`'s
`make_tokens`); not timed.

lmforge: `pretrain.run` with `--workers` workers of `--cpus-per-worker` CPUs on a local
Ray of 2 CPUs (2 x 0.5 leaves one for the rest of the job, which the stage checks), ZeRO
`--zero-stage` over gloo, fp32 (lmforge's precision on CPU), `--micro-batch` sequences per
worker and `--accum` micro-steps per optimizer step. Ray starts each worker with
OMP_NUM_THREADS = max(1, floor(cpus_per_worker)) where it is unset: 1 thread each by
default. Its figure is read from the run's own `tokens_per_s` and `tokens` metrics
(logged every `--window` steps): the steady state is the windows after the first, each
weighted by its tokens.
Baseline: `ddp_baseline.py` under `torchrun --standalone --nproc-per-node WORKERS`, gloo on
CPU, run after Ray has stopped, with the same OMP_NUM_THREADS per process (`--threads`,
default: what Ray gives each worker). It takes every hyperparameter from the validated
recipe lmforge ran (seed, lr, min_lr, warm-up, weight decay, gradient clip, micro-batch,
accumulation, steps): the same `LlamaForCausalLM` and initial weights, AdamW groups and
betas, `lmforge.train.loop.lr_schedule`, clipping. It reads the same `tokens/train` shards,
each rank a disjoint contiguous slice in file order (lmforge's ranks take seeded
permutations of them: the same rows, another order); with `--same-order` each rank takes
at each step the very sequences lmforge's rank takes (`lmforge.train.data.TrainBatches`).
Its steady state excludes its first `--window` steps.
Agreement (exit 1 when it fails): the same number of tokens trained on, as each side
counts what it fed (lmforge's last `tokens` metric, the baseline's sum over ranks), both
equal to steps x workers x micro-batch x accum x seq_len; and the last window's training
loss (the mean over every rank's micro-batches of the window, as lmforge logs
`train_loss`) within 10%: the same initial weights and updates, other sequences in each
step, so close, not equal (the loss of every window is printed beside). With
`--same-order` the two differ only by the order of floating-point sums (ZeRO's
reduce-scatter against DDP's all-reduce): within 1%. The first losses are printed too:
from the same weights both start near ln(vocab).
Speed goal: lmforge at least 0.9 x DDP; missing it is printed but does not fail the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from train_throughput import make_tokens

SPEED_GOAL = 0.9  # lmforge / DDP steady tokens/s
LOSS_TOLERANCE = 0.10  # relative difference of the last window's losses, other data order
SAME_ORDER_TOLERANCE = 0.01  # the same, with the same sequences at every step
HERE = Path(__file__).resolve().parent


def pretrain_sets(args: argparse.Namespace) -> list[str]:
    return [
        f"pretrain.preset={args.preset}",
        f"pretrain.num_workers={args.workers}",
        f"pretrain.cpus_per_worker={args.cpus_per_worker}",
        "pretrain.use_gpu=false",
        "pretrain.precision=fp32",
        f"pretrain.zero_stage={args.zero_stage}",
        f"pretrain.micro_batch_size={args.micro_batch}",
        f"pretrain.grad_accum_steps={args.accum}",
        f"pretrain.max_steps={args.steps}",
        f"pretrain.warmup_steps={args.warmup}",
        f"pretrain.log_every={args.window}",
        f"pretrain.eval_every={args.steps}",  # one validation pass, after the last window
        f"pretrain.eval_batches={args.eval_batches}",
        f"pretrain.checkpoint_every={args.steps + 1}",  # no checkpoint inside the loop
    ]


def steady_rate(tokens: list[tuple[int, float]], rates: list[tuple[int, float]]) -> float:
    """Tokens/s of the windows after the first (all of them when there is one): each
    window's tokens (the step of `tokens`' cumulative count) over its seconds (tokens /
    its logged rate)."""
    cumulative = dict(tokens)
    if not all(s in cumulative for s, _ in rates):  # logged apart: assume equal windows
        steady = [v for _, v in rates][1:] or [v for _, v in rates]
        return len(steady) / sum(1 / v for v in steady)
    windows, before = [], 0.0
    for step, rate in sorted(rates):
        n = cumulative[step] - before
        windows.append((n, n / rate))
        before = cumulative[step]
    steady_w = windows[1:] or windows
    return sum(n for n, _ in steady_w) / sum(s for _, s in steady_w)


def run_lmforge(r: Any) -> dict[str, Any]:
    """Run the stage; its figures come from the metrics rank 0 logged to MLflow."""
    from lmforge.jobs import pretrain
    from lmforge.platform import tracking

    harness.prepare_mlflow(r)
    sw = harness.Stopwatch()
    with sw.span("run"):
        res = pretrain.run(r)
    history = {
        key: tracking.metric_history(res.run_id, key)
        for key in ("tokens_per_s", "tokens", "train_loss")
    }
    for key in ("tokens_per_s", "tokens"):  # without these there is nothing to compare
        if not history[key]:
            raise SystemExit(f"train_overhead: the lmforge run {res.run_id} logged no {key!r}")
    losses = sorted(history["train_loss"])
    if not losses and "final_train_loss" in res.metrics:  # renamed or not logged per window
        losses = [(int(res.metrics.get("steps", 0)), res.metrics["final_train_loss"])]
    rates = sorted(history["tokens_per_s"])
    out: dict[str, Any] = {
        "stage_s": sw["run"],
        "first_window_tokens_per_s": rates[0][1],
        "steady_tokens_per_s": steady_rate(history["tokens"], rates),
        "tokens": max(v for _, v in history["tokens"]),
        "losses": losses,  # [(step, train_loss)]: window means over every rank
    }
    final = res.metrics.get("final_tokens")
    if final is not None and final != out["tokens"]:
        print(
            f"note: StageResult.metrics['final_tokens'] = {final}, but the run's last "
            f"logged `tokens` is {out['tokens']}"
        )
    return out


def run_ddp(tokens: Path, p: Any, args: argparse.Namespace) -> dict[str, Any]:
    """`ddp_baseline.py` under torchrun, with the hyperparameters of lmforge's recipe `p`;
    returns its JSON (and `wall_s`: the subprocess's seconds, start-up included)."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={args.workers}", str(HERE / "ddp_baseline.py"),
        f"--tokens={tokens}", f"--preset={p.preset}", f"--seq-len={args.seq_len}",
        f"--micro-batch={p.micro_batch_size}", f"--accum={p.grad_accum_steps}",
        f"--steps={p.max_steps}", f"--lr={p.lr}", f"--warmup={p.warmup_steps}",
        f"--min-lr={p.min_lr}", f"--weight-decay={p.weight_decay}",
        f"--grad-clip={p.grad_clip}", f"--seed={p.seed}", f"--window={p.log_every}",
        f"--threads={args.threads}", f"--order={'lmforge' if args.same_order else 'slices'}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"train_overhead: the DDP baseline failed (exit {proc.returncode})")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return {**json.loads(line), "wall_s": wall}
    raise SystemExit(f"train_overhead: no JSON line from the DDP baseline:\n{proc.stdout[-2000:]}")


def default_threads(cpus_per_worker: float) -> int:
    """The threads Ray gives a worker: OMP_NUM_THREADS when set (workers inherit it),
    else max(1, floor(CPUs it reserves))."""
    return int(os.environ.get("OMP_NUM_THREADS") or max(1, math.floor(cpus_per_worker)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4000, help="docstrings tokenized for training")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps")
    ap.add_argument("--window", type=int, default=5, help="steps per rate window; first skipped")
    ap.add_argument("--warmup", type=int, default=5, help="linear warm-up steps")
    ap.add_argument("--preset", default="demo", help="model preset (tiny, demo, ...)")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    ap.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size")
    ap.add_argument("--workers", type=int, default=2, help="Ray Train workers = DDP processes")
    ap.add_argument("--cpus-per-worker", type=float, default=0.5, help="CPUs Ray reserves each")
    ap.add_argument("--micro-batch", type=int, default=4, help="sequences per rank per micro-step")
    ap.add_argument("--accum", type=int, default=2, help="micro-steps per optimizer step")
    ap.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2, 3])
    ap.add_argument("--eval-batches", type=int, default=1, help="validation micro-batches/rank")
    ap.add_argument("--threads", type=int, default=None, help="OMP threads per DDP process")
    ap.add_argument(
        "--same-order", action="store_true", help="DDP reads lmforge's sequences at each step"
    )
    args = ap.parse_args()
    args.threads = args.threads or default_threads(args.cpus_per_worker)

    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as d:
        tmp = Path(d)
        sw = harness.Stopwatch()
        t_ray = harness.start_ray()
        try:
            with sw.span("prepare"):
                tokens = make_tokens(tmp, args)
            sets = pretrain_sets(args)
            r = harness.recipe(tmp, "pretrain", [str(tokens)], str(tmp / "pretrain"), *sets)
            lm = run_lmforge(r)
        finally:
            harness.stop_ray()
        ddp = run_ddp(tokens, r.pretrain, args)

    p = r.pretrain
    plan = p.max_steps * args.workers * p.micro_batch_size * p.grad_accum_steps * args.seq_len
    print(
        f"setup (not timed below): Ray startup {t_ray:.1f} s, tokenize {sw['prepare']:.1f} s; "
        f"preset {p.preset}, {args.workers} ranks x {p.micro_batch_size} x {args.seq_len} "
        f"tokens x {p.grad_accum_steps} micro-steps, {p.max_steps} steps, fp32, "
        f"{args.threads} thread(s) per rank; lmforge stage wall time (Ray Train start, "
        f"DeepSpeed init, export) {lm['stage_s']:.1f} s, DDP under torchrun (start-up "
        f"included) {ddp['wall_s']:.1f} s; DDP schedule: {ddp['schedule']}"
    )
    lm_losses = lm["losses"]
    first_step = lm_losses[0][0] if lm_losses else p.log_every
    lm_first = lm_losses[0][1] if lm_losses else math.nan
    lm_final = lm_losses[-1][1] if lm_losses else math.nan
    ddp_first = ddp["window_losses"].get(str(first_step), math.nan)
    harness.table(
        [
            (f"lmforge pretrain ({args.workers} workers, ZeRO-{p.zero_stage})",
             harness.fmt(lm["first_window_tokens_per_s"], 0),
             harness.fmt(lm["steady_tokens_per_s"], 0),
             harness.fmt(lm_first, 3), harness.fmt(lm_final, 3)),
            (f"PyTorch DDP (torchrun, {ddp['world']} x {ddp['threads']} thread)",
             harness.fmt(ddp["first_window_tokens_per_s"], 0),
             harness.fmt(ddp["steady_tokens_per_s"], 0),
             harness.fmt(ddp_first, 3), harness.fmt(ddp["final_loss"], 3)),
        ],
        ("", "first window tok/s", "steady tok/s", "first window loss", "last window loss"),
    )  # fmt: skip
    per_window = ", ".join(
        f"{s}: {v:.3f}/{ddp['window_losses'].get(str(s), math.nan):.3f}" for s, v in lm_losses
    )
    order = "the same sequences" if args.same_order else "other sequences per step"
    print(f"train loss per window (by last step), lmforge/DDP, {order}: {per_window}")
    print(
        f"first loss: DDP step 1 {ddp['first_loss']:.3f}, ln(vocab) = "
        f"{math.log(ddp['vocab_size']):.3f} ({ddp['vocab_size']} ids); lmforge logs means "
        f"of {p.log_every}-step windows, the first {lm_first:.3f} (DDP {ddp_first:.3f})"
    )
    t_lm, t_ddp = lm["tokens"], ddp["tokens"]
    same_tokens = t_lm == t_ddp == plan
    tol = SAME_ORDER_TOLERANCE if args.same_order else LOSS_TOLERANCE
    close = abs(lm_final - ddp["final_loss"]) <= tol * ddp["final_loss"]  # False with a nan
    print(
        f"agreement: same tokens trained on={same_tokens} (lmforge `tokens` {t_lm:,.0f}, "
        f"DDP counted {t_ddp:,}, the plan {plan:,}), last window's train loss within "
        f"{tol:.0%}={close} ({lm_final:.4f} vs {ddp['final_loss']:.4f})"
    )
    return harness.result(
        "train_overhead",
        lm["steady_tokens_per_s"],
        ddp["steady_tokens_per_s"],
        "tokens/s",
        agree=same_tokens and close,
        goal=SPEED_GOAL,
    )


if __name__ == "__main__":
    raise SystemExit(main())
