"""Plain PyTorch DDP pretraining on lmforge's token shards: the baseline of
`train_overhead.py`, run on its own under torchrun.

    torchrun --standalone --nproc-per-node 2 benchmarks/ddp_baseline.py --tokens DIR [...]

Not a benchmark by itself (it prints no RESULT line): `train_overhead.py` runs it beside
`lmforge pretrain` and compares. No Ray, no DeepSpeed: `torch.distributed` (gloo on CPU,
NCCL with `--device cuda`) and `DistributedDataParallel`, with what lmforge's recipe uses:

- model: `LlamaForCausalLM` from `lmforge.train.presets.get_preset(name).llama_config`,
  vocabulary and eos/pad ids from `DIR/tokenizer` (or `--vocab-size`, `--eos-id`,
  `--pad-id` when the folder has none), built after `torch.manual_seed(--seed)` on every
  rank, as lmforge's loop does: the same initial weights;
- optimizer: AdamW, betas (0.9, 0.95), weight decay on parameters of 2+ dimensions only,
  gradient norm clipped to `--grad-clip`; the schedule is `lmforge.train.loop.lr_schedule`
  (linear warm-up, cosine to `--min-lr`), stepped once per optimizer step; where that
  function cannot be imported or called, the same transformers schedule it wraps, and the
  JSON says which one ran (`schedule`);
- data: the rows of `DIR/train/*.parquet` (column `input_ids`, `--seq-len` ids each), in
  sorted file order; rank r takes the r-th of `world` contiguous slices and reads it in
  micro-batches of `--micro-batch` rows (a short tail dropped), epoch after epoch. With
  `--order lmforge`, each step's rows are instead those lmforge's rank r takes at that
  step (`lmforge.train.data.TrainBatches`: seeded permutations of row groups and rows);
- step: `--accum` micro-batches, each loss divided by `--accum` before backward (gradients
  all-reduced once, at the last: `no_sync` before), then clip, AdamW, schedule. Losses
  stay on the device: no host sync inside the loop.

Threads: `--threads` (default: OMP_NUM_THREADS, else 1) per process.
Timing: rank 0's wall clock, from the loop's start. The first `--window` steps are the
first window, left out of the steady rate (`steady_tokens_per_s`: the tokens of every
later step over their time). Rank 0 prints one JSON line on stdout:

    {"tokens": ..., "steady_tokens_per_s": ..., "first_loss": ..., "final_loss": ..., "steps": ...}

with more keys beside. `tokens` is counted: every row fed to the model, summed over
ranks. Losses are means over every rank's micro-batches, as lmforge logs `train_loss`:
`first_loss` of step 1, `final_loss` of the last window (the steps since the last
multiple of `--window`), `window_losses` of each window by its last step, `step_losses`
of each step; they are all-reduced once, after the timed loop.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any


def load_rows(folder: Path) -> Any:
    """(N, T) int64 token ids of every Parquet file under `folder`, in sorted file order."""
    import numpy as np
    import pyarrow.parquet as pq

    files = sorted(p for p in folder.rglob("*.parquet") if p.is_file())
    if not files:
        raise SystemExit(f"ddp_baseline: no Parquet file under {folder}")
    parts = [
        np.stack(pq.read_table(f, columns=["input_ids"])["input_ids"].to_numpy(False))
        for f in files
    ]
    return np.concatenate(parts).astype(np.int64)


def rank_slice(rows: Any, rank: int, world: int) -> Any:
    """Rank r's contiguous share of the rows: disjoint, equal-sized (the remainder dropped)."""
    n = len(rows) // world
    return rows[rank * n : (rank + 1) * n]


def micro_batches(rows: Any, size: int) -> Any:
    """(size, T) batches of `rows` in order, a short tail dropped, epoch after epoch."""
    import torch

    per_epoch = len(rows) // size
    if per_epoch == 0:
        raise SystemExit(f"ddp_baseline: a rank holds {len(rows)} rows, fewer than {size}")
    while True:
        for i in range(per_epoch):
            yield torch.from_numpy(rows[i * size : (i + 1) * size])


def model_config(args: argparse.Namespace) -> Any:
    """The preset's LlamaConfig, with the vocabulary and special ids of DIR/tokenizer."""
    from lmforge.train.presets import get_preset

    vocab, eos, pad = args.vocab_size, args.eos_id, args.pad_id
    tok_dir = Path(args.tokens) / "tokenizer"
    if tok_dir.is_dir():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tok_dir))  # what lmforge's trainer.plan reads
        vocab = len(tok) if vocab is None else vocab
        eos = tok.eos_token_id if eos is None else eos
        pad = tok.pad_token_id if pad is None else pad
    if vocab is None:
        raise SystemExit("ddp_baseline: no tokenizer folder beside the shards; pass --vocab-size")
    return get_preset(args.preset).llama_config(
        vocab_size=vocab,
        eos_token_id=0 if eos is None else eos,
        pad_token_id=1 if pad is None else pad,
    )


def schedule(opt: Any, args: argparse.Namespace) -> tuple[Any, str]:
    """(scheduler, which one): lmforge's own `lr_schedule` where it can be called."""
    try:
        from lmforge.train.config import PretrainConfig
        from lmforge.train.loop import lr_schedule

        p = PretrainConfig(
            lr=args.lr, min_lr=args.min_lr, warmup_steps=args.warmup, max_steps=args.steps
        )
        return lr_schedule(opt, p), "lmforge.train.loop.lr_schedule"
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        from transformers import get_cosine_with_min_lr_schedule_with_warmup

        sched = get_cosine_with_min_lr_schedule_with_warmup(
            opt, num_warmup_steps=args.warmup, num_training_steps=args.steps, min_lr=args.min_lr
        )
        return sched, f"transformers cosine with min_lr (lmforge's lr_schedule failed: {e!r})"


def step_batches(args: argparse.Namespace, rank: int, world: int) -> Any:
    """step -> this rank's `--accum` (micro_batch, T) batches of that optimizer step."""
    tokens = Path(args.tokens)
    if args.order == "lmforge":  # the exact sequences lmforge's rank takes at each step
        from lmforge.train.data import TrainBatches

        lm = TrainBatches(
            str(tokens / "train"),
            seq_len=args.seq_len,
            seed=args.seed,
            rank=rank,
            world=world,
            micro_batch_size=args.micro_batch,
            grad_accum_steps=args.accum,
        )
        return lm.step_batches
    rows = load_rows(tokens / "train")
    if rows.shape[1] != args.seq_len:
        raise SystemExit(f"ddp_baseline: rows hold {rows.shape[1]} tokens, not {args.seq_len}")
    it = micro_batches(rank_slice(rows, rank, world), args.micro_batch)
    return lambda step: [next(it) for _ in range(args.accum)]


def train(args: argparse.Namespace) -> dict[str, Any] | None:
    """Train on every rank; rank 0 returns the figures, the others None."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from transformers import LlamaForCausalLM

    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    data = step_batches(args, rank, world)

    config = model_config(args)
    torch.manual_seed(args.seed)  # as every lmforge rank does: the same initial weights
    model: Any = LlamaForCausalLM(config)
    model.to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    groups = [
        {"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": args.weight_decay},
        {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0},
    ]  # fmt: skip
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), fused=False)
    sched, sched_name = schedule(opt, args)

    fed = 0  # tokens this rank fed to the model, counted
    step_losses = []  # this rank's sum of micro-batch losses per step, on the device
    marks: list[float] = []  # rank 0's wall clock at the end of each step
    w = args.window if args.window < args.steps else 0  # first window, left out of the rate
    ddp.train()
    t0 = time.perf_counter()
    for step in range(args.steps):
        batches = data(step)
        loss_sum = torch.zeros((), device=device)
        for i, x in enumerate(batches):
            x = x.to(device)  # (B, T)
            fed += x.numel()
            last = i == len(batches) - 1
            with nullcontext() if last else ddp.no_sync():  # all-reduce at the last only
                loss = ddp(input_ids=x, labels=x).loss  # HF shifts the labels inside
                (loss / len(batches)).backward()
            loss_sum += loss.detach()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step_losses.append(loss_sum)
        if cuda and step + 1 in (w, args.steps):
            torch.cuda.synchronize()  # the window's work done before its clock stops
        marks.append(time.perf_counter())

    # once, after the clock: every rank's losses and tokens (lmforge all-reduces per step)
    losses_t = torch.stack(step_losses).double()
    total = torch.tensor([fed], dtype=torch.int64, device=device)
    dist.all_reduce(losses_t)
    dist.all_reduce(total)
    losses = (losses_t / (args.accum * world)).tolist()  # mean over every micro-batch
    last_lr = float(sched.get_last_lr()[0])
    dist.destroy_process_group()
    if rank != 0:
        return None

    per_step = int(total.item()) // args.steps  # every rank feeds the same rows per step
    first_s = marks[w - 1] - t0 if w else marks[-1] - t0
    steady_s = marks[-1] - (marks[w - 1] if w else t0)
    ends = list(range(args.window, args.steps + 1, args.window))
    if not ends or ends[-1] != args.steps:
        ends.append(args.steps)  # lmforge logs at the last step too
    starts = [0, *ends[:-1]]
    window_losses = {str(b): sum(losses[a:b]) / (b - a) for a, b in zip(starts, ends, strict=True)}
    return {
        "tokens": int(total.item()),
        "steady_tokens_per_s": per_step * (args.steps - w) / steady_s,
        "first_loss": losses[0],
        "final_loss": window_losses[str(args.steps)],
        "steps": args.steps,
        "first_window_tokens_per_s": per_step * (w or args.steps) / first_s,
        "window_losses": window_losses,
        "step_losses": losses,
        "world": world,
        "threads": torch.get_num_threads(),
        "train_seconds": marks[-1] - t0,
        "final_lr": last_lr,
        "schedule": sched_name,
        "order": args.order,
        "vocab_size": config.vocab_size,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", required=True, help="tokenize stage output (train/, tokenizer/)")
    ap.add_argument("--preset", default="demo", help="lmforge model preset (tiny, demo, ...)")
    ap.add_argument("--vocab-size", type=int, default=None, help="default: len(tokenizer)")
    ap.add_argument("--eos-id", type=int, default=None, help="default: the tokenizer's")
    ap.add_argument("--pad-id", type=int, default=None, help="default: the tokenizer's")
    ap.add_argument("--seq-len", type=int, required=True, help="tokens per row (checked)")
    ap.add_argument("--micro-batch", type=int, default=8, help="sequences per rank per micro-step")
    ap.add_argument("--accum", type=int, default=1, help="micro-steps per optimizer step")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    ap.add_argument("--warmup", type=int, default=20, help="linear warm-up steps")
    ap.add_argument("--min-lr", type=float, default=1e-4, help="learning rate at the end")
    ap.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay (2D+ params)")
    ap.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip (0: off)")
    ap.add_argument("--seed", type=int, default=1234, help="torch seed before the model is built")
    ap.add_argument("--window", type=int, default=10, help="first steps left out of the rate")
    ap.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS") or 1),
        help="torch threads per process (default: OMP_NUM_THREADS, else 1)",
    )
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: NCCL")
    ap.add_argument(
        "--order",
        choices=["slices", "lmforge"],
        default="slices",
        help="slices: rank r reads the r-th contiguous slice of the rows in file order; "
        "lmforge: the sequences lmforge.train.data.TrainBatches gives rank r at each step",
    )
    args = ap.parse_args(argv)
    if args.steps < 1 or args.accum < 1 or args.micro_batch < 1 or args.window < 1:
        ap.error("--steps, --accum, --micro-batch and --window must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    if "RANK" not in os.environ:
        print("ddp_baseline: run under torchrun (no RANK in the environment)", file=sys.stderr)
        return 2
    out = train(args)
    if out is not None:
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
