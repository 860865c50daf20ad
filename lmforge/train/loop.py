"""The per-worker pretraining loop that Ray Train runs on every rank.

It reads as a list of steps: build the model, shard it, resume, then
(step, log, evaluate, checkpoint) until max_steps, then export Hugging Face weights.
Sharding lives in `sharding.py`; MLflow is touched on rank 0 only, via RunLogger.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from lmforge.train import sharding
from lmforge.train.config import PretrainConfig


@dataclass(kw_only=True)
class LoopConfig:
    """What each worker needs, built on the driver (plain values only, they are pickled).

    pretrain: the recipe's `pretrain` section (`PretrainConfig.model_dump()`), read back
    with `PretrainConfig` in the worker: no field is copied by hand.
    """

    pretrain: dict[str, Any]
    llama_config: dict[str, Any]  # transformers.LlamaConfig.to_dict()
    tokenizer_files: dict[str, str]  # file name -> text, written next to the exported weights
    ds_config: dict[str, Any]
    seq_len: int
    tracking_uri: str | None
    run_id: str | None


def lr_schedule(optimizer: torch.optim.Optimizer, p: PretrainConfig) -> Any:
    """Linear warm-up to `lr` over `warmup_steps`, then cosine decay to `min_lr` at
    `max_steps` (transformers' schedule; DeepSpeed steps it once per optimizer step)."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=p.warmup_steps,
        num_training_steps=p.max_steps,
        min_lr=p.min_lr,
    )


def batches(shard: Any, batch_size: int, *, repeat: bool) -> Iterator[torch.Tensor]:
    """(B, T) int64 token batches from a Ray Data shard; epoch after epoch if `repeat`."""
    while True:
        got = 0
        for b in shard.iter_torch_batches(
            batch_size=batch_size, dtypes=torch.int64, drop_last=True
        ):
            got += 1
            yield b["input_ids"]
        if got == 0:
            raise RuntimeError(
                f"a worker's data shard holds fewer than micro_batch_size={batch_size} "
                "sequences; make more data, fewer workers or a smaller batch"
            )
        if not repeat:
            return


def train_loop_per_worker(config: dict[str, Any]) -> None:
    cfg = LoopConfig(**config)
    p = PretrainConfig.model_validate(cfg.pretrain)
    sharding.select_accelerator(p.use_gpu)
    import ray.train
    from transformers import LlamaConfig, LlamaForCausalLM

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(p.seed)  # same initial weights on every rank
    logger = _rank0_logger(cfg, rank)

    # 1) model and sharding
    model = LlamaForCausalLM(LlamaConfig.from_dict(cfg.llama_config))
    if p.activation_checkpointing:
        model.gradient_checkpointing_enable()
    engine = sharding.wrap(
        model,
        cfg.ds_config,
        lr=p.lr,
        weight_decay=p.weight_decay,
        schedule=lambda opt: lr_schedule(opt, p),
    )
    device = engine.device

    # 2) resume from the latest DeepSpeed checkpoint Ray Train holds, if any
    step = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            _, client_state = engine.load_checkpoint(d, tag="ds")
            step = int(client_state["step"])

    train_it = batches(ray.train.get_dataset_shard("train"), p.micro_batch_size, repeat=True)
    tokens_per_step = p.micro_batch_size * cfg.seq_len * p.grad_accum_steps * world
    t_last, tokens_seen = time.perf_counter(), step * tokens_per_step  # resumed: as planned
    fed = 0  # tokens this rank fed to the model since the last log line, counted
    latest: dict[str, float] = {}  # the last value of each metric, sent with the export

    # 3) the loop
    while step < p.max_steps:
        engine.train()
        loss_sum = 0.0
        for _ in range(p.grad_accum_steps):
            x = next(train_it).to(device)  # (B, T)
            fed += x.numel()
            loss = engine(input_ids=x, labels=x).loss  # HF shifts labels inside
            engine.backward(loss)
            engine.step()  # DeepSpeed steps the optimizer at the accumulation boundary
            loss_sum += loss.item()
        step += 1
        metrics: dict[str, float] = {}

        if step % p.log_every == 0 or step == p.max_steps:
            dt = time.perf_counter() - t_last
            fed_all = _sum_over_ranks(fed, device)  # every rank logs at this step: a collective
            tokens_seen, fed = tokens_seen + fed_all, 0
            metrics |= {
                "train_loss": loss_sum / p.grad_accum_steps,
                "lr": engine.get_lr()[0],
                "tokens": tokens_seen,
                "tokens_per_s": fed_all / dt,
            }
            t_last = time.perf_counter()
        if step % p.eval_every == 0 or step == p.max_steps:
            metrics["val_loss"] = evaluate(engine, p, device)

        if metrics:
            metrics["step"] = step
            latest |= metrics
            if logger is not None:
                logger.log(metrics, step)
            if rank == 0:
                _progress(step, p.max_steps, metrics)
        if step % p.checkpoint_every == 0 and step < p.max_steps:
            _save_checkpoint(engine, step, metrics)
        elif metrics:
            ray.train.report(metrics)

    # 4) export the final weights in Hugging Face format, written by rank 0 only, with
    # the loss of the trained weights on a fixed probe, which the export must reproduce.
    # Ray Train keeps the metrics of checkpointed reports only: the export carries them all
    latest["probe_loss"] = probe_loss(engine, model.config.vocab_size, cfg.seq_len, device)
    _export_hf(engine, model, cfg, rank, {**latest, "step": step, "checkpoint_kind": 1.0})


def _sum_over_ranks(n: int, device: torch.device) -> int:
    import torch.distributed as dist

    t = torch.tensor([n], dtype=torch.int64, device=device)  # NCCL reduces GPU tensors
    if dist.is_initialized():
        dist.all_reduce(t)
    return int(t.item())


def probe_ids(vocab_size: int, seq_len: int) -> torch.Tensor:
    """(1, seq_len) token ids that do not depend on the data: 0, 7, 14, ... mod vocab."""
    return (torch.arange(seq_len, dtype=torch.int64) * 7 % vocab_size).unsqueeze(0)


def probe_loss(engine: Any, vocab_size: int, seq_len: int, device: torch.device) -> float:
    """The engine's loss on `probe_ids`: a fingerprint of the trained weights that a
    loaded export must reproduce. Every rank calls it (ZeRO-3's forward is a collective)."""
    engine.eval()
    x = probe_ids(vocab_size, seq_len).to(device)
    with torch.no_grad():
        return float(engine(input_ids=x, labels=x).loss.item())


def evaluate(engine: Any, p: PretrainConfig, device: torch.device) -> float:
    """Mean loss over up to eval_batches validation micro-batches, averaged over ranks."""
    import ray.train
    import torch.distributed as dist

    engine.eval()
    total, count = torch.zeros(2, dtype=torch.float64)
    shard = ray.train.get_dataset_shard("val") if _has_val() else None
    if shard is not None:
        with torch.no_grad():
            for i, x in enumerate(batches(shard, p.micro_batch_size, repeat=False)):
                if i >= p.eval_batches:
                    break
                total += engine(input_ids=x.to(device), labels=x.to(device)).loss.item()
                count += 1
    t = torch.tensor([float(total), float(count)], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)  # every rank joins, even one whose shard was empty
    return float(t[0] / t[1]) if t[1] > 0 else float("nan")


def _has_val() -> bool:
    import ray.train

    try:
        ray.train.get_dataset_shard("val")
    except (KeyError, ValueError):
        return False
    return True


def _save_checkpoint(engine: Any, step: int, metrics: dict[str, float]) -> None:
    """Every rank writes its ZeRO shard into one directory; Ray Train uploads them all
    to the same checkpoint in the run's storage."""
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        engine.save_checkpoint(d, tag="ds", client_state={"step": step})
        ray.train.report(
            {**metrics, "step": step, "checkpoint_kind": 0.0},
            checkpoint=ray.train.Checkpoint.from_directory(d),
        )


def _export_hf(
    engine: Any, model: Any, cfg: LoopConfig, rank: int, metrics: dict[str, float]
) -> None:
    import ray.train

    state = sharding.full_state_dict(engine)  # a collective under ZeRO-3: all ranks call it
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0 and state is not None:
            model.save_pretrained(d, state_dict=state, safe_serialization=True)
            for name, text in cfg.tokenizer_files.items():
                with open(os.path.join(d, name), "w", encoding="utf-8") as f:
                    f.write(text)
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


def _rank0_logger(cfg: LoopConfig, rank: int) -> Any:
    if rank != 0 or not cfg.run_id or not cfg.tracking_uri:
        return None
    from lmforge.platform.tracking import RunLogger

    return RunLogger(cfg.tracking_uri, cfg.run_id)


def _progress(step: int, max_steps: int, m: dict[str, float]) -> None:
    parts = [f"step {step}/{max_steps}"]
    if "train_loss" in m:
        parts += [
            f"loss {m['train_loss']:.4f}",
            f"lr {m['lr']:.2e}",
            f"{m['tokens_per_s']:,.0f} tok/s",
            f"{int(m['tokens']):,} tokens",
        ]
    if "val_loss" in m:
        parts.append(f"val_loss {m['val_loss']:.4f}")
    print(f"[lmforge pretrain] {' | '.join(parts)}", flush=True)
