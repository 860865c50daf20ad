"""A training run on paper: GPU-hours, memory per GPU, step time, failures and checkpoints.

Pure arithmetic over a model's size and shape and a GPU from `hardware.GPUS`; torch is
touched only to count a preset's parameters on the meta device
(`presets.meta_param_counts`). `plan(PlanInput(...))` answers "how long, does it fit, on
how few GPUs, is it communication-bound, how often to checkpoint"; `lmforge plan` prints
it. Recipe validation needs only the memory half:

    memory_fit(*, preset=None, params=None, vocab_size, seq_len, micro_batch_size, gpu,
               gpus, zero_stage, activation_checkpointing, tp=1, pp=1, layers=None,
               d_model=None, heads=None, flash_attention=True)
        -> MemoryFit(fits, per_gpu_gib, capacity_gib, breakdown)

`MemoryFit` is a named tuple: unpack it or read its fields. `capacity_gib` is the usable
memory, `MEMORY_HEADROOM` of the GPU's (the rest is left to the CUDA context, NCCL
buffers and allocator fragmentation), so `fits` is exactly `per_gpu_gib <=
capacity_gib`; `breakdown` gives GiB per part (weights, gradients, optimizer,
activations, logits, zero3_buffers, total) and `summary` says it in one line. A preset
gives the shape; a parameter count passed with it must agree with the preset's (1%), a
check that both describe one model. Bad input raises `PlanError`, a ValueError whose
`field` names the input.

The memory model and its sources are in `lmforge.train.memory`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from lmforge.train import hardware
from lmforge.train.memory import (
    GIB,
    MEMORY_HEADROOM,
    NODE_GPUS,
    Memory,
    Model,
    PlanError,
    check_layout,
    memory_per_gpu,
    min_gpus_to_fit,
    resolve_model,
)

__all__ = ["MemoryFit", "Plan", "PlanError", "PlanInput", "memory_fit", "parse_count", "plan"]

# Llama 3 (Dubey et al. 2024, section 3.3.4): 419 unexpected interruptions in a 54-day
# snapshot of pre-training on 16,384 H100s. Failures scale with the GPUs a job holds.
LLAMA3_INTERRUPTIONS, LLAMA3_DAYS, LLAMA3_GPUS = 419, 54, 16384


def default_mtbf_hours(gpus: int) -> float:
    """Mean time between job interruptions at Llama 3's failure rate per GPU:
    54·24/419 = 3.09 hours at 16,384 GPUs, twice that at half as many."""
    return LLAMA3_DAYS * 24 / LLAMA3_INTERRUPTIONS * LLAMA3_GPUS / gpus


def parse_count(text: str) -> float:
    """'405e9', '4.05e11', '405B', '7b', '15.6T', '16M', '2_000' -> a float.
    Suffixes are powers of ten: K, M, B (or G), T."""
    m = re.fullmatch(r"\s*([0-9][0-9_]*\.?[0-9_]*(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgGtT]?)\s*", text)
    if not m:
        raise ValueError(f"not a number: {text!r} (try 405e9, 4.05e11, 405B or 15.6T)")
    scale = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}[m[2].upper()]
    return float(m[1].replace("_", "")) * scale


@dataclass(frozen=True, kw_only=True)
class PlanInput:
    """A run to plan. Sizes in tokens and parameters; times in seconds unless named.

    preset / params: the model, by preset name or by parameter count (one of the two).
    layers, d_model, heads: the shape for a parameter count (default: the nearest preset's).
    vocab_size: tokenizer vocabulary (Llama 3's 128,256).
    tokens: tokens to train on (None: 20 per parameter, Chinchilla, Hoffmann et al. 2022).
    seq_len: tokens per sequence. global_batch_tokens: tokens per optimizer step, rounded
      to a whole number of micro-steps (`Plan.global_batch_tokens` is what is planned).
    gpu: a `hardware.GPUS` name or alias. gpus: GPUs in the job.
    zero_stage: DeepSpeed ZeRO stage over the data-parallel degree gpus/(tp·pp).
    tp, pp: tensor- and pipeline-parallel degrees.
    mfu: model FLOPs utilisation to assume (Llama 3 405B: 38-43%).
    activation_checkpointing: full recomputation of each layer in backward.
    micro_batch_size: sequences per GPU per micro-step.
    flash_attention: attention scores never stored (SDPA/FlashAttention kernels).
    mtbf_hours: mean time between job interruptions (None: `default_mtbf_hours(gpus)`).
    checkpoint_write_s: time to write one checkpoint. 60 s: 405B's 14 bytes/param of
      weights and optimizer state (5.7 TB) at ~100 GB/s aggregate to storage.
    restart_s: time from a failure to training again (detect, reschedule, load): an
      assumption of a few minutes, not a published figure.
    """

    preset: str | None = None
    params: float | None = None
    layers: int | None = None
    d_model: int | None = None
    heads: int | None = None
    vocab_size: int = 128256
    tokens: float | None = None
    seq_len: int = 8192
    global_batch_tokens: float = 4 * 2**20
    gpu: str = "H100-SXM"
    gpus: int = 8
    zero_stage: int = 3
    tp: int = 1
    pp: int = 1
    mfu: float = 0.4
    activation_checkpointing: bool = True
    micro_batch_size: int = 1
    flash_attention: bool = True
    mtbf_hours: float | None = None
    checkpoint_write_s: float = 60.0
    restart_s: float = 300.0


@dataclass(frozen=True)
class Plan:
    """What `plan` finds (units in the names; `as_dict` flattens it for JSON).

    gpu_hours, days and tokens_per_s are useful work at the MFU, as published budgets
    count it. overhead_fraction is the Young/Daly waste per unit of that work, to first
    order: writes (δ/τ) plus, per failure, half an interval and a write redone and the
    restart (lost_per_failure_s / MTBF); expected_failures is over days x (1 + overhead).
    communication_bound: ZeRO's traffic per step takes longer than the step's compute,
    so no overlap can hide it.
    """

    inp: PlanInput
    gpu: hardware.GpuSpec
    model: Model
    dp: int
    grad_accum_steps: int
    global_batch_tokens: int
    steps: float
    tokens: float
    flops_per_token: float
    memory: Memory
    memory_no_checkpointing: Memory
    memory_checkpointing: Memory
    capacity_gib: float
    fits: bool
    min_gpus: int | None
    tokens_per_s: float
    days: float
    gpu_hours: float
    step_compute_s: float
    step_comm_s: float
    comm_bandwidth_gbps: float
    communication_bound: bool
    mtbf_hours: float
    checkpoint_interval_s: float
    lost_per_failure_s: float
    overhead_fraction: float
    expected_failures: float
    notes: list[str] = field(default_factory=list)

    @property
    def memory_per_gpu_gib(self) -> float:
        return self.memory.total / GIB

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.source,
            "params": self.model.params,
            "flops_params": self.model.flops_params,
            "layers": self.model.layers,
            "d_model": self.model.d_model,
            "heads": self.model.heads,
            "gpu": self.gpu.name,
            "gpus": self.inp.gpus,
            "tp": self.inp.tp,
            "pp": self.inp.pp,
            "dp": self.dp,
            "zero_stage": self.inp.zero_stage,
            "mfu": self.inp.mfu,
            "tokens": self.tokens,
            "seq_len": self.inp.seq_len,
            "global_batch_tokens": self.global_batch_tokens,
            "micro_batch_size": self.inp.micro_batch_size,
            "grad_accum_steps": self.grad_accum_steps,
            "steps": self.steps,
            "flops_per_token": self.flops_per_token,
            "tflops_per_gpu": self.inp.mfu * self.gpu.peak_bf16_tflops,
            "tokens_per_s": self.tokens_per_s,
            "days": self.days,
            "gpu_hours": self.gpu_hours,
            "memory_per_gpu_gib": self.memory_per_gpu_gib,
            "memory_gib": self.memory.gib(),
            "activations_gib": {
                "checkpointing": self.memory_checkpointing.activations / GIB,
                "no_checkpointing": self.memory_no_checkpointing.activations / GIB,
            },
            "activation_checkpointing": self.inp.activation_checkpointing,
            "capacity_gib": self.capacity_gib,
            "fits": self.fits,
            "min_gpus": self.min_gpus,
            "step_compute_s": self.step_compute_s,
            "step_comm_s": self.step_comm_s,
            "comm_bandwidth_gbps": self.comm_bandwidth_gbps,
            "communication_bound": self.communication_bound,
            "mtbf_hours": self.mtbf_hours,
            "checkpoint_write_s": self.inp.checkpoint_write_s,
            "checkpoint_interval_min": self.checkpoint_interval_s / 60,
            "lost_per_failure_min": self.lost_per_failure_s / 60,
            "expected_failures": self.expected_failures,
            "overhead_fraction": self.overhead_fraction,
            "notes": self.notes,
        }


def zero_comm_bytes(params_per_rank: float, dp: int, zero_stage: int, grad_accum: int) -> float:
    """Bytes each GPU sends per optimizer step for data parallelism (bf16, ring
    collectives, each moving (dp-1)/dp of the buffer per GPU).

    ZeRO-0/1: one all-reduce of the gradients at the step (2 passes: reduce-scatter +
    all-gather). ZeRO-2: a reduce-scatter of the gradients every micro-step, as they are
    produced, and an all-gather of the updated weights at the step. ZeRO-3: every
    micro-step all-gathers the weights in forward and again in backward and
    reduce-scatters the gradients: 3 passes, 1.5x plain data parallelism at one micro-step
    (ZeRO paper, section 7: 3Ψ against 2Ψ)."""
    if dp <= 1:
        return 0.0
    one_pass = (dp - 1) / dp * 2.0 * params_per_rank
    passes = {0: 2.0, 1: 2.0, 2: grad_accum + 1.0, 3: 3.0 * grad_accum}[zero_stage]
    return passes * one_pass


def young_daly_interval_s(write_s: float, mtbf_s: float) -> float:
    """Checkpoint interval that minimises the expected waste, to first order:
    τ = sqrt(2·δ·M) (Young 1974; Daly 2006), δ the write time, M the MTBF."""
    return math.sqrt(2.0 * write_s * mtbf_s)


def plan(inp: PlanInput) -> Plan:
    """Plan a run (see the module docstring for the memory model and `PlanInput`)."""
    try:
        gpu = hardware.get_gpu(inp.gpu)
    except ValueError as e:
        raise PlanError("gpu", str(e)) from None
    model = resolve_model(
        preset=inp.preset,
        params=inp.params,
        vocab_size=inp.vocab_size,
        layers=inp.layers,
        d_model=inp.d_model,
        heads=inp.heads,
    )
    dp = check_layout(inp.gpus, inp.tp, inp.pp, inp.zero_stage)
    if not 0 < inp.mfu <= 1:
        raise PlanError("mfu", f"must be in (0, 1] (got {inp.mfu})")
    for name in ("checkpoint_write_s", "restart_s"):
        if getattr(inp, name) < 0:
            raise PlanError(name, "must not be negative")
    if inp.mtbf_hours is not None and not inp.mtbf_hours > 0:
        raise PlanError("mtbf_hours", f"must be positive (got {inp.mtbf_hours})")
    tokens = 20.0 * model.params if inp.tokens is None else inp.tokens
    if not tokens > 0:
        raise PlanError("tokens", f"must be positive (got {tokens:g})")
    for name in ("seq_len", "micro_batch_size"):
        if getattr(inp, name) < 1:
            raise PlanError(name, f"must be at least 1 (got {getattr(inp, name)})")
    micro_tokens = dp * inp.micro_batch_size * inp.seq_len
    if inp.global_batch_tokens < micro_tokens:
        raise PlanError(
            "global_batch_tokens",
            f"{inp.global_batch_tokens:g} tokens is less than one micro-batch on every "
            f"data-parallel rank ({dp} x {inp.micro_batch_size} x {inp.seq_len} = {micro_tokens})",
        )
    accum = max(1, round(inp.global_batch_tokens / micro_tokens))
    batch = accum * micro_tokens  # what a step really holds: whole micro-steps

    def memory_at(dp: int, ckpt: bool = inp.activation_checkpointing) -> Memory:
        return memory_per_gpu(
            model,
            vocab_size=inp.vocab_size,
            seq_len=inp.seq_len,
            micro_batch_size=inp.micro_batch_size,
            dp=dp,
            tp=inp.tp,
            pp=inp.pp,
            zero_stage=inp.zero_stage,
            activation_checkpointing=ckpt,
            flash_attention=inp.flash_attention,
        )

    mem = memory_at(dp)
    capacity = gpu.memory_gib * MEMORY_HEADROOM * GIB

    fpt = hardware.flops_per_token(model.flops_params, model.layers, model.d_model, inp.seq_len)
    flops_per_gpu_s = inp.mfu * gpu.peak_bf16_tflops * 1e12
    step_compute = batch * fpt / (inp.gpus * flops_per_gpu_s)
    # the data-parallel ring crosses nodes once the job does (model parallelism innermost)
    bandwidth = gpu.inter_node_gbps if inp.gpus > NODE_GPUS else gpu.intra_node_gbps
    comm_bytes = zero_comm_bytes(model.params / (inp.tp * inp.pp), dp, inp.zero_stage, accum)
    step_comm = comm_bytes / (bandwidth * 1e9)

    gpu_seconds = tokens * fpt / flops_per_gpu_s
    compute_s = gpu_seconds / inp.gpus
    mtbf_h = inp.mtbf_hours if inp.mtbf_hours is not None else default_mtbf_hours(inp.gpus)
    mtbf_s = mtbf_h * 3600
    tau = young_daly_interval_s(inp.checkpoint_write_s, mtbf_s)
    # a failure lands anywhere in an interval plus its write: half of that is redone
    lost = (tau + inp.checkpoint_write_s) / 2 + inp.restart_s
    overhead = (inp.checkpoint_write_s / tau if tau else 0.0) + lost / mtbf_s
    notes = [
        "memory: Korthikanti et al. 2022 activations (GPT's formula, an approximation for "
        "Llama's SwiGLU and GQA), mixed-precision Adam at 16 bytes/param",
        "communication: ZeRO data parallelism only (tensor/pipeline traffic not counted), "
        f"ring collectives at {bandwidth:g} GB/s per GPU",
    ]
    if batch != inp.global_batch_tokens:
        notes.append(f"global batch {inp.global_batch_tokens:g} rounded to {accum} micro-steps")
    if "nearest" in model.source:
        notes.append(f"shape of {model.source}: pass layers and d_model for your own")
    return Plan(
        inp=inp,
        gpu=gpu,
        model=model,
        dp=dp,
        grad_accum_steps=accum,
        global_batch_tokens=batch,
        steps=tokens / batch,
        tokens=tokens,
        flops_per_token=fpt,
        memory=mem,
        memory_no_checkpointing=memory_at(dp, False),
        memory_checkpointing=memory_at(dp, True),
        capacity_gib=capacity / GIB,
        fits=mem.total <= capacity,
        min_gpus=min_gpus_to_fit(lambda n: memory_at(n).total, capacity, inp.tp, inp.pp),
        tokens_per_s=tokens / compute_s,
        days=compute_s / 86400,
        gpu_hours=gpu_seconds / 3600,
        step_compute_s=step_compute,
        step_comm_s=step_comm,
        comm_bandwidth_gbps=bandwidth,
        communication_bound=step_comm > step_compute,
        mtbf_hours=mtbf_h,
        checkpoint_interval_s=tau,
        lost_per_failure_s=lost,
        overhead_fraction=overhead,
        expected_failures=compute_s * (1 + overhead) / mtbf_s,
        notes=notes,
    )


class MemoryFit(NamedTuple):
    """What `memory_fit` finds; GiB throughout."""

    fits: bool
    per_gpu_gib: float
    capacity_gib: float
    breakdown: dict[str, float]

    @property
    def summary(self) -> str:
        """'activations 43.2, zero3_buffers 11.9, ... GiB (total 66.3)': largest first."""
        parts = sorted(((v, k) for k, v in self.breakdown.items() if k != "total"), reverse=True)
        text = ", ".join(f"{k} {v:.1f}" for v, k in parts)
        return f"{text} GiB (total {self.per_gpu_gib:.1f})"


def memory_fit(
    *,
    preset: str | None = None,
    params: float | None = None,
    vocab_size: int,
    seq_len: int,
    micro_batch_size: int,
    gpu: str,
    gpus: int,
    zero_stage: int,
    activation_checkpointing: bool,
    tp: int = 1,
    pp: int = 1,
    layers: int | None = None,
    d_model: int | None = None,
    heads: int | None = None,
    flash_attention: bool = True,
) -> MemoryFit:
    """Whether a training layout fits its GPU (the module docstring gives the contract,
    `lmforge.train.memory` the model); PlanError on bad input."""
    try:
        spec = hardware.get_gpu(gpu)
    except ValueError as e:
        raise PlanError("gpu", str(e)) from None
    model = resolve_model(
        preset=preset,
        params=None if preset else params,
        vocab_size=vocab_size,
        layers=layers,
        d_model=d_model,
        heads=heads,
    )
    if preset and params is not None and abs(params / model.params - 1) > 0.01:
        raise PlanError(
            "params", f"{params:g} parameters, but preset {preset} has {model.params:g}"
        )
    dp = check_layout(gpus, tp, pp, zero_stage)
    mem = memory_per_gpu(
        model,
        vocab_size=vocab_size,
        seq_len=seq_len,
        micro_batch_size=micro_batch_size,
        dp=dp,
        tp=tp,
        pp=pp,
        zero_stage=zero_stage,
        activation_checkpointing=activation_checkpointing,
        flash_attention=flash_attention,
    )
    capacity_gib = spec.memory_gib * MEMORY_HEADROOM
    per_gpu = mem.total / GIB
    return MemoryFit(per_gpu <= capacity_gib, per_gpu, capacity_gib, mem.gib())
