"""The per-worker pretraining loop that Ray Train runs on every rank.

It reads as a list of steps (torchtitan's train.py is the model):

1. build the model (partitioned under ZeRO-3) and wrap it in the sharding backend;
2. resume from the latest checkpoint Ray Train holds: model, optimizer, LR schedule,
   RNG states, the step, and this rank's data position (checked against the data order);
3. per optimizer step: the step's micro-batches (a function of the step, `data.py`),
   forward/backward, one all-reduce of the step's loss, the optimizer step unless that
   loss is not finite (skipped, up to `max_skipped_steps` in a row);
4. every `log_every`: metrics on rank 0 (window loss, LR, grad norm, tokens/s, TFLOP/s
   per device, MFU on a GPU of known peak); every `eval_every`: validation loss and
   perplexity; every `checkpoint_every`: a checkpoint;
5. the final Hugging Face export, written by rank 0.

Steps replayed after a restart are not logged again: rank 0 compares them with what the
MLflow run already holds and logs the largest difference (`resume_replay_max_diff`). A
restart is counted (`restarts`, `resumed_from_step`) whenever the run already has steps
in MLflow, with or without a checkpoint to resume from (a worker lost before the first
checkpoint was registered replays from step 0).
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmforge.train import sharding
from lmforge.train.config import PretrainConfig
from lmforge.train.data import IGNORE_INDEX, TrainBatches, val_batches


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
    train_uri: str  # token shards of the train split (local path or s3://)
    val_uri: str | None
    flops_per_token: float  # 6N + 12 * layers * d_model * seq_len (PaLM, appendix B)
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


@dataclass
class State:
    """What a checkpoint carries besides the backend's own state (the client state)."""

    step: int = 0
    tokens: int = 0
    skipped_steps: int = 0  # non-finite steps skipped over the run
    skipped_in_a_row: int = 0


def train_loop_per_worker(config: dict[str, Any]) -> None:
    cfg = LoopConfig(**config)
    p = PretrainConfig.model_validate(cfg.pretrain)
    sharding.select_accelerator(p.use_gpu)
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    log = Rank0Log(cfg, rank)

    # 1) model, partitioned where the backend shards parameters, then wrapped
    backend = sharding.make_backend(p, cfg.ds_config)
    model = backend.build_model(cfg.llama_config, seed=p.seed)
    held = _held_fractions(backend, world)
    if p.activation_checkpointing:
        model.gradient_checkpointing_enable()
    backend.wrap(model, lambda opt: lr_schedule(opt, p))
    device = backend.device

    # 2) data order and resume
    data = TrainBatches(
        cfg.train_uri,
        seq_len=cfg.seq_len,
        seed=p.seed,
        rank=rank,
        world=world,
        micro_batch_size=p.micro_batch_size,
        grad_accum_steps=p.grad_accum_steps,
    )
    st = State()
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            st = _restore(backend, d, rank, data)
    log.start(st, held)
    val = (
        val_batches(
            cfg.val_uri,
            seq_len=cfg.seq_len,
            rank=rank,
            world=world,
            micro_batch_size=p.micro_batch_size,
            max_batches=p.eval_batches,
        )
        if cfg.val_uri
        else []
    )

    # 3) the loop: one optimizer step per iteration
    window = Window(device, world=world, accum=p.grad_accum_steps)
    while st.step < p.max_steps:
        batches, labels = data.step(st.step)
        tokens = sum(x.numel() for x in batches) * world  # every rank takes equal batches
        drill = rank == 0 and st.step + 1 in p.fault_nan_steps  # a rehearsed NaN
        check = window.poisoned if drill else window.finite
        _, applied = backend.train_step(batches, check, labels)
        st.step += 1
        st.tokens += tokens
        window.tokens += tokens
        st.skipped_in_a_row = 0 if applied else st.skipped_in_a_row + 1
        st.skipped_steps += 0 if applied else 1
        if not applied:
            log.skipped(st)
            if st.skipped_in_a_row > p.max_skipped_steps:
                # every rank sees the same all-reduced loss and stops here together; the
                # run ends without an export and the driver raises (an exception would be
                # retried by Ray Train from the last checkpoint, to the same NaN). Ray
                # Train returns the metrics of checkpointed reports only: rank 0 reports
                # a marker checkpoint
                stop = {"step": st.step, "nonfinite_stop": float(st.skipped_in_a_row)}
                log.log({"skipped_steps": float(st.skipped_steps), **stop}, st.step)
                _report_stop(stop, rank)
                return

        # 4) measure, evaluate, checkpoint
        metrics: dict[str, float] = {}
        if st.step % p.log_every == 0 or st.step == p.max_steps:
            metrics |= window.metrics(backend, st, cfg, p.use_gpu)
        if cfg.val_uri and (st.step % p.eval_every == 0 or st.step == p.max_steps):
            metrics |= evaluate(backend, val, device)
        if metrics:
            metrics["step"] = st.step
            log.log(metrics, st.step)
        if st.step % p.checkpoint_every == 0 and st.step < p.max_steps:
            _save(backend, st, rank, data, metrics)
        elif metrics:
            ray.train.report(metrics)

    # 5) export the final weights in Hugging Face format, written by rank 0 only, with
    # the loss of the trained weights on a fixed probe, which the export must reproduce
    x = probe_ids(model.config.vocab_size, cfg.seq_len)
    final = {**log.latest, "probe_loss": float(backend.loss(x)), "step": st.step}
    _export_hf(backend, model, cfg, rank, {**final, "checkpoint_kind": 1.0})


class Window:
    """The log window. Each step's loss sum is all-reduced once (the step's only host
    sync: it also decides whether the step is taken) and added up as a tensor; no
    `.item()` per micro-batch."""

    def __init__(self, device: torch.device, *, world: int, accum: int) -> None:
        self.world, self.accum = world, accum
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0  # micro-batch mean losses summed into `loss`, over all ranks
        self.tokens = 0
        self.t0 = time.perf_counter()

    def finite(self, loss_sum: torch.Tensor) -> bool:
        """All-reduce this rank's loss sum; the step is taken when the sum over ranks is
        finite (a NaN or inf on any rank makes it so)."""
        import torch.distributed as dist

        t = loss_sum.detach().double().reshape(1).clone()
        if dist.is_initialized():
            dist.all_reduce(t)
        ok = bool(torch.isfinite(t).item())
        if ok:  # equal-sized micro-batches: the mean of their means is the token mean
            self.loss += t[0]
            self.count += self.accum * self.world
        return ok

    def poisoned(self, loss_sum: torch.Tensor) -> bool:
        """`finite` on a NaN in place of this rank's loss (`pretrain.fault_nan_steps`)."""
        return self.finite(loss_sum * float("nan"))

    def metrics(self, backend: Any, st: State, cfg: LoopConfig, use_gpu: bool) -> dict[str, float]:
        tokens_per_s = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
        out = {
            "lr": backend.lr(),
            "tokens": float(st.tokens),
            "tokens_per_s": tokens_per_s,
            "tflops_per_device": tokens_per_s / self.world * cfg.flops_per_token / 1e12,
            "skipped_steps": float(st.skipped_steps),
        }
        if self.count:
            out["train_loss"] = float(self.loss) / self.count
        norm = backend.grad_norm()
        if norm is not None and math.isfinite(norm):
            out["grad_norm"] = norm
        peak = _peak_tflops(use_gpu)
        if peak:  # on CPU, or a GPU not in the table, MFU is omitted, not invented
            out["mfu"] = out["tflops_per_device"] / peak
        self.loss.zero_()
        self.count, self.tokens, self.t0 = 0, 0, time.perf_counter()
        return out


def _peak_tflops(use_gpu: bool) -> float | None:
    if not use_gpu or not torch.cuda.is_available():
        return None
    from lmforge.train.hardware import peak_tflops_for_device

    return peak_tflops_for_device(torch.cuda.get_device_name())


def probe_ids(vocab_size: int, seq_len: int) -> torch.Tensor:
    """(1, seq_len) token ids that do not depend on the data: 0, 7, 14, ... mod vocab."""
    return (torch.arange(seq_len, dtype=torch.int64) * 7 % vocab_size).unsqueeze(0)


def evaluate(
    backend: Any, val: list[tuple[torch.Tensor, torch.Tensor | None]], device: torch.device
) -> dict[str, float]:
    """Mean loss per target token and perplexity over this rank's validation batches,
    over all ranks (each rank has the same number of batches: a ZeRO-3 forward is a
    collective). A batch weighs as many targets as it has (all tokens but the first of
    each row, or those its labels keep)."""
    import torch.distributed as dist

    total = torch.zeros(2, dtype=torch.float64, device=device)
    for x, labels in val:
        loss = backend.loss(x, labels).double()
        targets = x[:, 1:].numel() if labels is None else int((labels[:, 1:] != IGNORE_INDEX).sum())
        if targets:  # a batch with no target still ran its forward (ZeRO-3 collective)
            total[0] += loss * targets
            total[1] += targets
    if dist.is_initialized():
        dist.all_reduce(total)
    if total[1] == 0:
        return {}
    loss = float(total[0] / total[1])
    return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 700.0))}


def _held_fractions(backend: Any, world: int) -> dict[str, float]:
    """Each rank's share of the model's parameters right after construction."""
    import torch.distributed as dist

    held, total = backend.held_parameters()
    t = torch.zeros(world, dtype=torch.float64, device=backend.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    t[rank] = held / max(total, 1)
    if dist.is_initialized():
        dist.all_reduce(t)
    return {f"params_held_fraction_rank{r}": float(t[r]) for r in range(world)}


def _rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(
    backend: Any, st: State, rank: int, data: TrainBatches, metrics: dict[str, float]
) -> None:
    """Every rank writes its shard of the DeepSpeed state, its RNG states and its data
    position into one directory; Ray Train uploads them all into one checkpoint."""
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        backend.save(d, client_state=vars(st).copy())
        rank_state = {"rng": _rng_state(), "data_position": data.position(st.step)}
        torch.save(rank_state, os.path.join(d, f"rank_{rank}.pt"))
        ray.train.report(
            {**metrics, "step": st.step, "checkpoint_kind": 0.0},
            checkpoint=ray.train.Checkpoint.from_directory(d),
        )


def _report_stop(metrics: dict[str, float], rank: int) -> None:
    import json

    import ray.train

    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:
            with open(os.path.join(d, "nonfinite_stop.json"), "w") as f:
                json.dump(metrics, f)
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


def _restore(backend: Any, d: str, rank: int, data: TrainBatches) -> State:
    client = backend.load(d)
    st = State(**{k: int(client[k]) for k in vars(State()) if k in client})
    rank_file = os.path.join(d, f"rank_{rank}.pt")
    if not os.path.exists(rank_file):
        raise RuntimeError(
            f"the checkpoint has no state for rank {rank}: it was written by fewer workers; "
            "resume with the pretrain.num_workers it was written with"
        )
    rank_state = torch.load(rank_file, weights_only=False)
    expected = data.position(st.step)
    if rank_state["data_position"] != expected:
        raise RuntimeError(
            f"rank {rank} saved data position {rank_state['data_position']} at step {st.step} "
            f"but the data order gives {expected}: the token shards, seed or batch shape changed"
        )
    _set_rng_state(rank_state["rng"])
    return st


def _export_hf(
    backend: Any, model: Any, cfg: LoopConfig, rank: int, metrics: dict[str, float]
) -> None:
    import ray.train

    state = backend.full_state_dict()  # a collective under ZeRO-3: all ranks call it
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0 and state is not None:
            model.save_pretrained(d, state_dict=state, safe_serialization=True)
            for name, text in cfg.tokenizer_files.items():
                with open(os.path.join(d, name), "w", encoding="utf-8") as f:
                    f.write(text)
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


class Rank0Log:
    """MLflow and the progress line, on rank 0 only. After a restart the steps already
    in the run are replayed, not logged again: their train loss is compared with the
    logged one and the largest difference is logged when the replay is over."""

    def __init__(self, cfg: LoopConfig, rank: int) -> None:
        self.rank = rank
        self.latest: dict[str, float] = {}  # the last value of each metric, for the export
        self.logger: Any = None
        self.logged: dict[int, float] = {}
        self.last_logged = 0
        self.replay_diff = 0.0
        self.replaying = False
        if rank == 0 and cfg.run_id and cfg.tracking_uri:
            from lmforge.platform.tracking import RunLogger

            self.logger = RunLogger(cfg.tracking_uri, cfg.run_id)

    def start(self, st: State, held: dict[str, float]) -> None:
        if self.logger is None:
            return
        history = self.logger.history("train_loss")
        self.logged = {step: value for step, value in history}
        steps = [s for s, _ in history] + [s for s, _ in self.logger.history("val_loss")]
        self.last_logged = max(steps, default=0)
        self.replaying = self.last_logged > st.step
        if st.step or self.last_logged:  # a restart, or a resubmitted job: count it
            restarts = 1 + int(max((v for _, v in self.logger.history("restarts")), default=0))
            self.logger.log({"restarts": restarts, "resumed_from_step": st.step}, st.step)
            print(f"[lmforge pretrain] restart {restarts}: resumed at step {st.step}", flush=True)
        else:
            self.logger.log(held, 0)

    def skipped(self, st: State) -> None:
        if self.rank == 0:
            print(f"[lmforge pretrain] step {st.step}: non-finite loss, update skipped", flush=True)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.latest |= metrics
        if self.rank != 0:
            return
        if step <= self.last_logged:  # replayed after a restart: compare, do not log again
            if step in self.logged and "train_loss" in metrics:
                self.replay_diff = max(
                    self.replay_diff, abs(metrics["train_loss"] - self.logged[step])
                )
            return
        if self.replaying and self.logger is not None:
            self.logger.log({"resume_replay_max_diff": self.replay_diff}, step)
            self.replaying = False
        if self.logger is not None:
            self.logger.log(metrics, step)
        _progress(step, metrics)


def _progress(step: int, m: dict[str, float]) -> None:
    parts = [f"step {step}"]
    if "train_loss" in m:
        parts += [
            f"loss {m['train_loss']:.4f}",
            f"lr {m['lr']:.2e}",
            f"{m['tokens_per_s']:,.0f} tok/s",
            f"{int(m['tokens']):,} tokens",
        ]
        if "grad_norm" in m:
            parts.append(f"grad_norm {m['grad_norm']:.3f}")
        if "mfu" in m:
            parts.append(f"MFU {m['mfu']:.1%}")
    if "val_loss" in m:
        parts.append(f"val_loss {m['val_loss']:.4f}")
    print(f"[lmforge pretrain] {' | '.join(parts)}", flush=True)
