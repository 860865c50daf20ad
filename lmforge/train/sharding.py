"""The sharding backend behind one small interface; DeepSpeed ZeRO is the one there is.

The training loop calls only what `ShardingBackend` declares: build the model (already
partitioned where the backend partitions), wrap it, run one optimizer step over a list of
micro-batches, save and load the state that resumes a run, and gather full weights for
export. Another backend (FSDP2, say) implements the same methods; the loop does not change.
DeepSpeed is imported inside the methods: it is heavy and probes the accelerator when
imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch

from lmforge.train.config import PretrainConfig
from lmforge.train.data import IGNORE_INDEX


class ShardingBackend(Protocol):
    device: torch.device

    def build_model(self, llama_config: dict[str, Any], *, seed: int) -> Any:
        """The LlamaForCausalLM, built (partitioned, where the backend shards parameters)."""

    def wrap(self, model: Any, schedule: Callable[[torch.optim.Optimizer], Any]) -> None:
        """Shard the model and make the optimizer and the LR schedule (`schedule(opt)`)."""

    def train_step(
        self,
        micro_batches: list[torch.Tensor],
        apply: Callable[[torch.Tensor], bool],
        labels: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, bool]:
        """Forward and backward each (B, T) micro-batch; then `apply(sum of the micro-batch
        losses)` decides whether the optimizer step is taken (False: no update, the LR
        schedule holds). Returns (the loss sum, applied). With `labels` (-100: not a
        target) the step's gradient is that of the mean loss over the step's targets on
        all ranks, and the sum is scaled so that sum / (micro-batches x ranks) is it."""

    def loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean token loss of a (B, T) batch over its targets (`labels`; None: every
        token), no gradient (a collective under ZeRO-3)."""

    def lr(self) -> float: ...

    def grad_norm(self) -> float | None:
        """Global gradient norm of the last step taken (before clipping), when known."""

    def save(self, folder: str, client_state: dict[str, Any]) -> None: ...

    def load(self, folder: str) -> dict[str, Any]:
        """Restore model, optimizer and LR schedule; returns the saved client state."""

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Consolidated weights on rank 0 (None elsewhere); every rank must call it."""

    def held_parameters(self) -> tuple[int, int]:
        """(parameters stored on this rank, parameters of the whole model)."""


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


class DeepSpeedBackend:
    """ZeRO stages 0-3 through `deepspeed.initialize`.

    Under ZeRO-3 the model is constructed inside `deepspeed.zero.Init` (through
    transformers' own ZeRO-3 path, `HfDeepSpeedConfig` + `_from_config`): each module's
    parameters are partitioned as soon as the module is built, so no rank ever holds the
    whole model; transformers then initializes the weights module by module, gathered,
    with rank 0's values.
    """

    def __init__(self, ds_config: dict[str, Any], *, lr: float, weight_decay: float) -> None:
        self.ds_config = ds_config
        self.lr_peak, self.weight_decay = lr, weight_decay
        self.stage = int(ds_config["zero_optimization"]["stage"])
        self.engine: Any = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._hf_ds_config: Any = None  # transformers holds a weak reference to it
        self.device = torch.device("cpu")
        self._built: Any = None

    def build_model(self, llama_config: dict[str, Any], *, seed: int) -> Any:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(seed)  # the same initial weights on every rank, every run
        config = LlamaConfig.from_dict(llama_config)
        if self.stage == 3:
            import deepspeed
            from transformers.integrations import HfDeepSpeedConfig

            if not torch.distributed.is_initialized():
                deepspeed.init_distributed()
            self._hf_ds_config = HfDeepSpeedConfig(self.ds_config)
        self._built = LlamaForCausalLM._from_config(config)
        return self._built

    def held_parameters(self) -> tuple[int, int]:
        params = list(self._module().parameters())
        if self.stage == 3:
            held = sum(int(p.ds_tensor.numel()) for p in params)
            return held, sum(int(p.ds_numel) for p in params)
        total = sum(p.numel() for p in params)
        return total, total

    def wrap(self, model: Any, schedule: Callable[[torch.optim.Optimizer], Any]) -> None:
        """AdamW is passed as a client optimizer so no fused CUDA kernel is built on CPU;
        with optimizer offload DeepSpeed's own CPU Adam is required instead."""
        import deepspeed

        decay = [p for p in model.parameters() if _ds_ndim(p) >= 2]
        no_decay = [p for p in model.parameters() if _ds_ndim(p) < 2]
        groups = [
            {"params": decay, "weight_decay": self.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer: torch.optim.Optimizer
        if self.ds_config["zero_optimization"].get("offload_optimizer"):
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer = DeepSpeedCPUAdam(groups, lr=self.lr_peak, betas=(0.9, 0.95))
        else:
            optimizer = torch.optim.AdamW(groups, lr=self.lr_peak, betas=(0.9, 0.95), fused=False)
        self.optimizer = optimizer
        engine, _, _, _ = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=schedule(optimizer),
            config=self.ds_config,
        )
        self.engine, self.device = engine, engine.device

    def train_step(
        self,
        micro_batches: list[torch.Tensor],
        apply: Callable[[torch.Tensor], bool],
        labels: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, bool]:
        engine = self.engine
        engine.train()
        losses = []
        scale = None if labels is None else self._target_scale(labels)
        for i, x in enumerate(micro_batches):
            x = x.to(self.device)
            if labels is None or scale is None:  # every token a target
                loss = engine(input_ids=x, labels=x, use_cache=False).loss  # HF shifts labels
            else:
                logits = engine(input_ids=x, use_cache=False).logits
                loss = target_loss_sum(logits, labels[i].to(self.device)) * scale
            engine.backward(loss)
            losses.append(loss.detach())
            if i < len(micro_batches) - 1:
                engine.step()  # not at the boundary: DeepSpeed only counts the micro-step
        total = torch.stack(losses).sum().float()
        applied = apply(total)
        with self._no_update(not applied):
            engine.step()  # the accumulation boundary: reduce, clip, optimizer and LR step
        return total, applied

    def _target_scale(self, labels: list[torch.Tensor]) -> float:
        """micro-batches x ranks / targets of the step on all ranks: a micro-batch's loss
        sum times this, averaged by DeepSpeed over micro-batches and ranks, is the mean
        over every target of the step (so a rank with fewer targets weighs less). One
        all-reduce of a scalar."""
        import torch.distributed as dist

        n = torch.tensor(
            [float(sum(int((lab[:, 1:] != IGNORE_INDEX).sum()) for lab in labels))],
            dtype=torch.float64,
            device=self.device,
        )
        world = 1
        if dist.is_initialized():
            dist.all_reduce(n)
            world = dist.get_world_size()
        return len(labels) * world / max(float(n[0]), 1.0)

    @contextmanager
    def _no_update(self, skip: bool) -> Iterator[None]:
        """Around the boundary `engine.step()`: when `skip`, the client optimizer's and the
        LR scheduler's `step` do nothing, so DeepSpeed runs its bookkeeping (reductions,
        zeroed gradients, micro-step counters) and the weights and schedule stay as they
        were. DeepSpeed calls both through their instance attributes."""
        if not skip:
            yield
            return
        targets: list[Any] = [t for t in (self.optimizer, self.engine.lr_scheduler) if t]
        saved = [t.__dict__.get("step") for t in targets]  # torch's LR scheduler wraps it
        for t in targets:
            t.step = _no_op
        try:
            yield
        finally:
            for t, old in zip(targets, saved, strict=True):
                if old is None:
                    del t.step
                else:
                    t.step = old

    def loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.engine.eval()
        x = x.to(self.device)
        target = x if labels is None else labels.to(self.device)
        with torch.no_grad():
            return self.engine(input_ids=x, labels=target, use_cache=False).loss.detach().float()

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def grad_norm(self) -> float | None:
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    def save(self, folder: str, client_state: dict[str, Any]) -> None:
        self.engine.save_checkpoint(folder, tag="ds", client_state=client_state)

    def load(self, folder: str) -> dict[str, Any]:
        path, client_state = self.engine.load_checkpoint(
            folder, tag="ds", load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if path is None:
            raise RuntimeError(f"no DeepSpeed checkpoint under {folder}/ds")
        return dict(client_state or {})

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Under ZeRO-3 no rank holds whole tensors: the gather is a collective, so a rank
        that skipped it would hang the others."""
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_initialized() else 0
        if self.stage == 3:
            sd = self.engine._zero3_consolidated_16bit_state_dict()
            return {k: v.detach().cpu() for k, v in sd.items()} if rank == 0 else None
        if rank != 0:
            return None
        return {k: v.detach().cpu() for k, v in self._module().state_dict().items()}

    def _module(self) -> Any:
        return self.engine.module if self.engine is not None else self._built


def target_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy of (B, T, V) logits over the targets of (B, T)
    labels: position t predicts label t + 1; IGNORE_INDEX labels are skipped. The same
    shift and float32 upcast as Hugging Face's causal-LM loss, reduced by sum."""
    shifted = logits[:, :-1, :].float().reshape(-1, logits.shape[-1])
    return torch.nn.functional.cross_entropy(
        shifted, labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def _no_op(*args: Any, **kwargs: Any) -> None:
    return None


def _ds_ndim(p: torch.Tensor) -> int:
    """A ZeRO-3 parameter is an empty placeholder; its real shape is `ds_shape`."""
    shape = getattr(p, "ds_shape", None)
    return len(shape) if shape is not None else p.ndim


def make_backend(p: PretrainConfig, ds_config: dict[str, Any]) -> ShardingBackend:
    return DeepSpeedBackend(ds_config, lr=p.lr, weight_decay=p.weight_decay)
