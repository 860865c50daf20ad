"""GPU MFU: lmforge's training step (the DeepSpeed engine its `lmforge.train.sharding`
builds) vs a plain PyTorch loop, on one GPU, the `1b` preset in bf16.

    python benchmarks/gpu_mfu.py [--preset 1b] [--vocab-size 128256] [--seq-len 2048]
        [--micro-batch 0] [--steps 20] [--warmup 5] [--activation-checkpointing]

Run it through `benchmarks/gpu_mfu.sh` on a lent GPU machine (it finds a Python whose
torch sees the GPU and puts this checkout on the path). Without a GPU it prints "no GPU"
and exits 0. No download: the data are random token ids (a seeded generator, the same
batches for both sides), the model is the preset's `LlamaForCausalLM` at `--vocab-size`
(128,256: Llama 3.2 1B's), built on the CPU after `torch.manual_seed(--seed)` by both
sides, so both start from the same weights.

Baseline: fp32 weights on the GPU, bf16 autocast, fused AdamW (betas 0.9/0.95, weight decay
0.1 on 2D+ parameters), gradient clipping at 1.0, the cosine schedule lmforge uses; no
host sync inside the timed steps, torch.compile off.
lmforge: `PretrainConfig(precision="bf16", zero_stage=--zero-stage, use_gpu=True, ...)`,
`sharding.deepspeed_config(p)`, and the backend's `build_model`/`wrap`/`train_step` (the
loop's own per-step finite-loss check, `loop.Window.finite`, one host sync a step), or,
with an older `sharding`, `wrap(...)` and engine forward/backward/step. World size 1,
NCCL. Where lmforge's path cannot be imported or built (deepspeed or pydantic missing on
the machine, say), it prints `lmforge path unavailable: <error>`, the baseline figures
still print, and the exit status is 2.

Each side runs `--warmup` steps untimed, then `--steps` timed ones. MFU = tokens/s x
flops_per_token / peak, with `lmforge.train.hardware.flops_per_token(N, layers, d_model,
seq_len)` (6N + 12 L d s; N the matmul parameters: all but an untied input embedding) and
the peak of `hardware.peak_tflops_for_device(torch.cuda.get_device_name())`
(`--peak-tflops` overrides it). Goal: lmforge's MFU >= 0.45 on an H100/H200 (missing it
is printed, not an exit failure). Agreement (exit 1 when it fails): the same tokens fed,
the first step's loss within 1% (same weights, same batch; bf16 on both sides) and the
last within 2% (random tokens: the loss stays near ln(vocab) on both sides).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

MFU_GOAL = 0.45  # lmforge's MFU on one H100/H200
FIRST_LOSS_TOL, LAST_LOSS_TOL = 0.01, 0.02  # relative differences of the two sides' losses


def flops_and_peak(model: Any, cfg: Any, seq_len: int, override: float | None) -> tuple[float, Any]:
    """(FLOPs per trained token, peak TFLOP/s or None) from lmforge's hardware module."""
    import torch

    from lmforge.train.hardware import flops_per_token, peak_tflops_for_device

    n = sum(p.numel() for p in model.parameters())  # a tied table is counted once
    if not cfg.tie_word_embeddings:  # the input lookup costs no FLOPs; the head counts
        n -= cfg.vocab_size * cfg.hidden_size
    fpt = flops_per_token(n, cfg.num_hidden_layers, cfg.hidden_size, seq_len)
    return fpt, override or peak_tflops_for_device(torch.cuda.get_device_name())


def timed(step: Callable[[Any], Any], batches: list[Any], warmup: int) -> dict[str, Any]:
    """Run `step(x)` on every batch; time the ones after `warmup` (device synced around)."""
    import torch

    losses = [step(x) for x in batches[:warmup]]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    losses += [step(x) for x in batches[warmup:]]
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    timed_tokens = sum(x.numel() for x in batches[warmup:])
    return {
        "tokens_per_s": timed_tokens / seconds,
        "tokens": sum(x.numel() for x in batches),
        "first_loss": float(losses[0]),
        "last_loss": float(losses[-1]),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def baseline(cfg: Any, batches: list[Any], args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """The plain loop: fp32 weights, bf16 autocast, fused AdamW. Returns (figures, model)."""
    import torch
    from transformers import LlamaForCausalLM, get_cosine_with_min_lr_schedule_with_warmup

    torch.manual_seed(args.seed)
    model: Any = LlamaForCausalLM(cfg)  # on the CPU, as lmforge builds it: the same weights
    model.to("cuda")
    if args.activation_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    groups = [
        {"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": 0.1},
        {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), fused=True)
    sched = get_cosine_with_min_lr_schedule_with_warmup(
        opt, num_warmup_steps=args.warmup, num_training_steps=len(batches), min_lr=args.lr / 10
    )

    def step(x: Any) -> Any:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()  # read after the clock: no host sync per step

    return timed(step, batches, args.warmup), model


def lmforge_path(cfg: Any, batches: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """lmforge's DeepSpeed engine on one process (world size 1, NCCL)."""
    import torch

    from lmforge.train import loop, sharding
    from lmforge.train.config import PretrainConfig

    p = PretrainConfig(
        preset=args.preset,
        num_workers=1,
        use_gpu=True,
        zero_stage=args.zero_stage,
        precision="bf16",
        activation_checkpointing=args.activation_checkpointing,
        micro_batch_size=args.micro_batch,
        grad_accum_steps=1,
        max_steps=len(batches),
        warmup_steps=args.warmup,
        lr=args.lr,
        min_lr=args.lr / 10,
        seed=args.seed,
    )
    ds_config = sharding.deepspeed_config(p)
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl")

    def schedule(opt: Any) -> Any:
        return loop.lr_schedule(opt, p)

    step: Callable[[Any], Any]
    if hasattr(sharding, "make_backend"):  # the backend interface (build, wrap, train_step)
        backend = sharding.make_backend(p, ds_config)
        model = backend.build_model(cfg.to_dict(), seed=p.seed)
        if p.activation_checkpointing:
            model.gradient_checkpointing_enable()
        backend.wrap(model, schedule)
        window = loop.Window(backend.device, world=1, accum=1)

        def step(x: Any) -> Any:
            loss, applied = backend.train_step([x], window.finite)
            if not applied:
                raise RuntimeError("lmforge skipped a step: non-finite loss")
            return loss

    else:  # the older interface: wrap(model, ds_config, ...) -> a DeepSpeed engine
        from transformers import LlamaForCausalLM

        torch.manual_seed(p.seed)
        model = LlamaForCausalLM(cfg)
        if p.activation_checkpointing:
            model.gradient_checkpointing_enable()
        legacy: Any = sharding  # this interface is gone from the current module
        engine = legacy.wrap(
            model, ds_config, lr=p.lr, weight_decay=p.weight_decay, schedule=schedule
        )

        def step(x: Any) -> Any:
            loss = engine(input_ids=x, labels=x).loss
            engine.backward(loss)
            engine.step()
            return loss.item()  # as that loop read it

    try:
        return timed(step, batches, args.warmup)
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _row(name: str, r: dict[str, Any] | None, fpt: float, peak: Any) -> list[str]:
    if r is None:
        return [name, "unavailable", "", "", "", "", ""]
    tflops = r["tokens_per_s"] * fpt / 1e12
    mfu = tflops / peak if peak else math.nan
    return [
        name,
        f"{r['tokens_per_s']:,.0f}",
        f"{tflops:,.1f}",
        f"{mfu:.3f}",
        f"{r['peak_gib']:.1f}",
        f"{r['first_loss']:.4f}",
        f"{r['last_loss']:.4f}",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="1b", help="lmforge model preset")
    ap.add_argument("--vocab-size", type=int, default=128256, help="Llama 3.2 1B's: 128,256")
    ap.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence")
    ap.add_argument("--micro-batch", type=int, default=0, help="0: 8 on 120+ GiB GPUs, else 4")
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per side")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (also LR warm-up)")
    ap.add_argument("--lr", type=float, default=3e-4, help="peak LR (configs/1b-1gpu.yaml's)")
    ap.add_argument("--zero-stage", type=int, default=1, choices=[0, 1, 2, 3])
    ap.add_argument("--activation-checkpointing", action="store_true", help="both sides")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the device peak")
    ap.add_argument("--seed", type=int, default=1234, help="torch seed before each model")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("no GPU")
        return 0
    import harness

    from lmforge.train.presets import get_preset

    props = torch.cuda.get_device_properties(0)
    if args.micro_batch <= 0:
        args.micro_batch = 8 if props.total_memory >= 120 * 2**30 else 4
    cfg = get_preset(args.preset).llama_config(
        vocab_size=args.vocab_size, eos_token_id=0, pad_token_id=1
    )
    g = torch.Generator(device="cuda").manual_seed(args.seed)
    shape = (args.micro_batch, args.seq_len)
    batches = [
        torch.randint(0, args.vocab_size, shape, device="cuda", generator=g)
        for _ in range(args.warmup + args.steps)
    ]  # (B, T) each, the same for both sides

    t0 = time.perf_counter()
    base, model = baseline(cfg, batches, args)
    fpt, peak = flops_and_peak(model, cfg, args.seq_len, args.peak_tflops)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    print(
        f"{props.name}: preset {args.preset}, vocab {args.vocab_size:,}, {args.micro_batch} x "
        f"{args.seq_len} tokens a step, {args.warmup} + {args.steps} steps; "
        f"{fpt / 1e9:.2f} GFLOP/token, peak {peak or 'unknown'} TFLOP/s; baseline done "
        f"in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    lm: dict[str, Any] | None = None
    try:
        lm = lmforge_path(cfg, batches, args)
    except Exception as e:  # import or interface: reported, the baseline still stands
        print(f"lmforge path unavailable: {type(e).__name__}: {e}", flush=True)
    harness.table(
        [_row("plain PyTorch (bf16 autocast)", base, fpt, peak),
         _row(f"lmforge DeepSpeed ZeRO-{args.zero_stage} bf16", lm, fpt, peak)],
        ("", "tokens/s", "TFLOP/s", "MFU", "peak GiB", "first loss", "last loss"),
    )  # fmt: skip
    if not peak:
        print(f"no peak known for {props.name!r}: MFU is nan; pass --peak-tflops")
    mfu_base = base["tokens_per_s"] * fpt / 1e12 / peak if peak else math.nan
    if lm is None:
        print(
            f"RESULT gpu_mfu: lmforge=unavailable, baseline={mfu_base:.3f} MFU, ratio=nan, "
            f"goal=mfu>={MFU_GOAL:g} MISSED",
            flush=True,
        )
        return 2
    mfu_lm = lm["tokens_per_s"] * fpt / 1e12 / peak if peak else math.nan
    first_ok = abs(lm["first_loss"] - base["first_loss"]) <= FIRST_LOSS_TOL * base["first_loss"]
    last_ok = abs(lm["last_loss"] - base["last_loss"]) <= LAST_LOSS_TOL * base["last_loss"]
    same_tokens = lm["tokens"] == base["tokens"]
    print(
        f"agreement: same tokens={same_tokens} ({lm['tokens']:,} vs {base['tokens']:,}), "
        f"first loss within {FIRST_LOSS_TOL:.0%}={first_ok}, last within "
        f"{LAST_LOSS_TOL:.0%}={last_ok} (ln(vocab) = {math.log(args.vocab_size):.4f})"
    )
    met = mfu_lm >= MFU_GOAL  # False when nan
    print(
        f"RESULT gpu_mfu: lmforge={mfu_lm:.3f} MFU, baseline={mfu_base:.3f} MFU, "
        f"ratio={lm['tokens_per_s'] / base['tokens_per_s']:.3g}, goal=mfu>={MFU_GOAL:g} "
        f"{'met' if met else 'MISSED'}",
        flush=True,
    )
    if not met:
        print(f"gpu_mfu: MFU goal MISSED: {mfu_lm:.3f}, goal >= {MFU_GOAL:g} (not an exit failure)")
    if not (same_tokens and first_ok and last_ok):
        print("gpu_mfu: lmforge and the baseline DISAGREE (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
