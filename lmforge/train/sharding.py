"""DeepSpeed behind three small functions: config, wrap, and gather full weights.

The training loop never mentions ZeRO: it calls `wrap(model, ...)` to get an engine and
`full_state_dict(engine)` to get the consolidated weights for export. DeepSpeed is
imported here, inside the functions, because it is heavy and probes the accelerator
when imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from lmforge.train.config import PretrainConfig


def deepspeed_config(p: PretrainConfig) -> dict[str, Any]:
    """The DeepSpeed JSON config of a `pretrain` section (no optimizer section: see `wrap`)."""
    zero: dict[str, Any] = {
        "stage": p.zero_stage,
        "contiguous_gradients": True,
        # overlap needs CUDA streams; on CPU/gloo it only adds copies
        "overlap_comm": p.use_gpu,
    }
    if p.zero_stage == 3:
        # the 16-bit consolidated state dict is what `full_state_dict` asks for
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if p.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": p.use_gpu}
    return {
        "train_micro_batch_size_per_gpu": p.micro_batch_size,
        "gradient_accumulation_steps": p.grad_accum_steps,
        "gradient_clipping": p.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": p.precision == "bf16"},
        "fp16": {"enabled": p.precision == "fp16"},
        # lmforge prints its own progress line with tokens/s
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def select_accelerator(use_gpu: bool) -> None:
    """Pin DeepSpeed's accelerator before its first import (it autodetects otherwise)."""
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def wrap(
    model: torch.nn.Module,
    ds_config: dict[str, Any],
    *,
    lr: float,
    weight_decay: float,
    schedule: Callable[[torch.optim.Optimizer], Any],
) -> Any:
    """Shard `model` with DeepSpeed; returns the engine (call it, .backward, .step).
    `schedule(optimizer)` makes the LR scheduler that DeepSpeed steps.

    AdamW is passed as a client optimizer so no fused CUDA kernel is built on CPU;
    with optimizer offload DeepSpeed's own CPU Adam is required instead.
    """
    import deepspeed

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer: torch.optim.Optimizer
    if ds_config["zero_optimization"].get("offload_optimizer"):
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(groups, lr=lr, betas=(0.9, 0.95))
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=False)
    scheduler = schedule(optimizer)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )
    return engine


def full_state_dict(engine: Any) -> dict[str, torch.Tensor] | None:
    """Consolidated weights on rank 0 (None elsewhere). Every rank must call this.

    Under ZeRO-3 no rank holds whole tensors; the gather is a collective, so a rank that
    skipped it would hang the others.
    """
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    if engine.zero_optimization_stage() == 3:
        sd = engine._zero3_consolidated_16bit_state_dict()
        return {k: v.detach().cpu() for k, v in sd.items()} if rank == 0 else None
    if rank != 0:
        return None
    return {k: v.detach().cpu() for k, v in engine.module.state_dict().items()}
