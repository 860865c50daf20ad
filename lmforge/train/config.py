"""The `pretrain` recipe section: model preset, sharding, optimizer, schedule, checkpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lmforge.platform.config import Section
from lmforge.train.presets import PRESETS


class PretrainConfig(Section):
    input: str | None = Field(None, description="Token shards folder (default: <workdir>/tokens).")
    output: str | None = Field(None, description="Output folder (default: <workdir>/pretrain).")
    preset: str = Field("demo", description=f"Model shape: one of {', '.join(PRESETS)}.")
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one per GPU on a cluster).")
    use_gpu: bool = Field(False, description="One GPU per worker, NCCL backend.")
    gpu: str | None = Field(
        None,
        description="GPU type the recipe is sized for (a name from `lmforge plan --list-gpus`, "
        "e.g. H100-SXM): memory fit is checked before any worker starts, and MFU uses its peak.",
    )
    cpus_per_worker: float = Field(
        1,
        gt=0,
        description="CPUs Ray reserves for each worker. Ray Data needs CPUs left over to "
        "stream the shards: on a 2-core laptop with 2 workers use 0.5.",
    )
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Training precision.")
    offload_optimizer: bool = Field(False, description="ZeRO-Offload optimizer state to CPU.")
    activation_checkpointing: bool = Field(False, description="Recompute activations in backward.")
    micro_batch_size: int = Field(8, ge=1, description="Sequences per worker per micro-step.")
    grad_accum_steps: int = Field(1, ge=1, description="Micro-steps per optimizer step.")
    max_steps: int = Field(200, ge=1, description="Optimizer steps to train.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    min_lr: float = Field(1e-4, ge=0, description="Learning rate at the end of cosine decay.")
    warmup_steps: int = Field(20, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, ge=0, description="Gradient norm clip (0: off).")
    log_every: int = Field(10, ge=1, description="Steps between progress lines and metrics.")
    eval_every: int = Field(100, ge=1, description="Steps between validation passes.")
    eval_batches: int = Field(8, ge=1, description="Micro-batches per validation pass.")
    checkpoint_every: int = Field(100, ge=1, description="Steps between DeepSpeed checkpoints.")
    num_to_keep: int = Field(2, ge=1, description="Checkpoints kept in storage (oldest removed).")
    max_failures: int = Field(
        3,
        ge=-1,
        description="Worker-group restarts from the latest checkpoint after a lost worker "
        "(Ray Train FailureConfig; -1: without limit, 0: fail at the first).",
    )
    max_skipped_steps: int = Field(
        3,
        ge=0,
        description="Optimizer steps with a non-finite loss skipped in a row before the run "
        "stops with an error naming the step.",
    )
    fault_nan_steps: list[int] = Field(
        [],
        description="Fault drill: optimizer steps whose loss is made NaN on rank 0 after the "
        "backward pass, to rehearse the non-finite guard (skip, count, stop). Empty in real runs.",
    )
    seed: int = Field(1234, description="Random seed for weights and data order.")
    storage_path: str | None = Field(
        None,
        description="Ray Train storage (local path or s3:// URI shared by all nodes) for "
        "checkpoints (default: <output>/ray_train).",
    )

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str | None) -> str | None:
        if v is not None:
            from lmforge.train.hardware import get_gpu

            get_gpu(v)  # ValueError listing the known names
        return v

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; choose one of {', '.join(PRESETS)}")
        return v
