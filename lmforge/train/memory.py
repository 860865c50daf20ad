"""Memory per GPU of a training layout, and the model size and shape it is computed from.

The memory model, per GPU (model-parallel degree m = tp·pp, data-parallel dp = gpus/m):

- Model states of mixed-precision Adam, 2 + 2 + 12 bytes per parameter (bf16 weights and
  gradients; fp32 master weights, momentum and variance: ZeRO, Rajbhandari et al. 2020,
  section 3), divided by m; ZeRO-1 also divides the 12 by dp, ZeRO-2 the gradients too,
  ZeRO-3 everything. (An fp32 recipe holds 4 + 4 + 8: the same 16, split differently.)
- Activations per layer (Korthikanti et al. 2022, "Reducing Activation Recomputation in
  Large Transformer Models", section 4): s·b·h·(34 + 5·a·s/h) bytes, with tensor and
  sequence parallelism s·b·h·(34/t + 5·a·s/(h·t)). The 5·a·s/h part is the a×s×s
  attention scores, which FlashAttention (Dao et al. 2022) never stores: transformers'
  Llama runs SDPA, whose flash and memory-efficient kernels are what bf16 on a GPU gets,
  so it is dropped unless `flash_attention=False`. With full recomputation a layer keeps
  only its input, 2·s·b·h/t, plus one layer's full activations while it is recomputed.
  Under the 1F1B pipeline schedule the first stage holds pp micro-batches of its L/pp
  layers, so about L layers' worth whatever pp is (Korthikanti section 4.2.3). The
  formula is GPT's (4h MLP, full multi-head attention); Llama's SwiGLU MLP stores a little
  more (about 21.5 rather than 19 of the 34 at an MLP 3.25 times d_model) and
  grouped-query attention a little less: an approximation, of the order of 10%.
- Logits: 4·s·b·V/t bytes, fp32 for the cross-entropy (Korthikanti section 4.3).
  Counted with the first stage's activations, as if on one GPU: exact for pp = 1,
  conservative beyond.
- ZeRO-3 working buffers: one layer's gathered bf16 weights and its bf16 gradients before
  they are reduce-scattered, 4 bytes per parameter of one layer (/tp).

The rest of the GPU, `1 - MEMORY_HEADROOM` of it, is left to the CUDA context, NCCL
buffers and allocator fragmentation. `planner.memory_fit` is the entry point for callers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from lmforge.train.presets import PRESETS, meta_param_counts

GIB = 2**30
MEMORY_HEADROOM = 0.9  # of the GPU's memory usable by the model (see module docstring)
NODE_GPUS = 8


class PlanError(ValueError):
    """A plan input that cannot be; `field` names it (the CLI turns it into an option)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Model:
    """What the planner needs of a network: sizes (parameters) and shape."""

    params: float  # all parameters: what the model states hold
    flops_params: float  # N of 6·N: all but the input embedding lookup
    layer_params: float  # one decoder block
    layers: int
    d_model: int
    heads: int
    source: str  # where the shape came from: "preset 405b", "given", "nearest preset 70b"


def resolve_model(
    *,
    preset: str | None,
    params: float | None,
    vocab_size: int,
    layers: int | None = None,
    d_model: int | None = None,
    heads: int | None = None,
) -> Model:
    """A preset (counted on the meta device), or a parameter count with its shape: given,
    or that of the preset nearest in parameter count (ratio, at this vocabulary). A
    parameter count is taken as Llama's layout, input embedding and head untied; heads
    default to d_model/128 (Llama's head_dim)."""
    if (preset is None) == (params is None):
        raise PlanError("preset", "give a preset or a parameter count, not both or neither")
    if vocab_size < 2:
        raise PlanError("vocab_size", f"must be at least 2 (got {vocab_size})")
    if preset is not None:
        if preset not in PRESETS:
            raise PlanError(
                "preset", f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
            )
        p = PRESETS[preset]
        total, non_embedding = meta_param_counts(p, vocab_size)
        return Model(
            params=total,
            flops_params=non_embedding + vocab_size * p.hidden_size,
            layer_params=non_embedding / p.num_layers,
            layers=p.num_layers,
            d_model=p.hidden_size,
            heads=p.num_heads,
            source=f"preset {preset}",
        )
    assert params is not None
    if not params > 0:
        raise PlanError("params", f"must be positive (got {params:g})")
    source = "given"
    if layers is None or d_model is None:
        near = min(
            PRESETS,
            key=lambda n: abs(math.log(params / meta_param_counts(PRESETS[n], vocab_size)[0])),
        )
        layers = layers or PRESETS[near].num_layers
        d_model = d_model or PRESETS[near].hidden_size
        heads = heads or (PRESETS[near].num_heads if d_model == PRESETS[near].hidden_size else None)
        source = f"nearest preset {near}"
    if layers < 1 or d_model < 1:
        raise PlanError("layers" if layers < 1 else "d_model", "must be positive")
    blocks = params - 2 * vocab_size * d_model  # all but the embedding and the head
    if blocks <= 0:
        raise PlanError(
            "params",
            f"{params:g} parameters are fewer than the embeddings of a {vocab_size}-token "
            f"vocabulary at d_model {d_model} ({2 * vocab_size * d_model:g})",
        )
    return Model(
        params=params,
        flops_params=params - vocab_size * d_model,
        layer_params=blocks / layers,
        layers=layers,
        d_model=d_model,
        heads=heads or max(1, d_model // 128),
        source=source,
    )


def activation_bytes(
    *,
    seq_len: int,
    micro_batch_size: int,
    d_model: int,
    heads: int,
    layers: int,
    tp: int = 1,
    pp: int = 1,
    activation_checkpointing: bool,
    flash_attention: bool = True,
) -> float:
    """Activation memory of the first pipeline stage, bytes (Korthikanti et al. 2022;
    the module docstring gives the terms)."""
    s, b, h, a, t = seq_len, micro_batch_size, d_model, heads, tp
    scores = 0.0 if flash_attention else 5.0 * a * s / h
    full_layer = s * b * h * (34.0 + scores) / t  # one layer, nothing recomputed
    held = math.ceil(layers / pp) * pp  # 1F1B: pp micro-batches of L/pp layers in flight
    if not activation_checkpointing:
        return held * full_layer
    return held * 2.0 * s * b * h / t + full_layer


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU, by part."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    zero3_buffers: float

    @property
    def total(self) -> float:
        return sum(asdict(self).values())

    def gib(self) -> dict[str, float]:
        return {k: v / GIB for k, v in {**asdict(self), "total": self.total}.items()}


def check_layout(gpus: int, tp: int, pp: int, zero_stage: int) -> int:
    """The data-parallel degree gpus/(tp·pp); PlanError naming the input that cannot be."""
    for name, v in (("gpus", gpus), ("tp", tp), ("pp", pp)):
        if v < 1:
            raise PlanError(name, f"must be at least 1 (got {v})")
    if zero_stage not in (0, 1, 2, 3):
        raise PlanError("zero_stage", f"must be 0, 1, 2 or 3 (got {zero_stage})")
    if gpus % (tp * pp):
        raise PlanError("gpus", f"{gpus} GPUs is not a multiple of tp·pp = {tp * pp}")
    return gpus // (tp * pp)


def memory_per_gpu(
    model: Model,
    *,
    vocab_size: int,
    seq_len: int,
    micro_batch_size: int,
    dp: int,
    tp: int,
    pp: int,
    zero_stage: int,
    activation_checkpointing: bool,
    flash_attention: bool = True,
) -> Memory:
    """The memory model of the module docstring, for one GPU."""
    if seq_len < 1 or micro_batch_size < 1:
        raise PlanError("seq_len" if seq_len < 1 else "micro_batch_size", "must be positive")
    shard = model.params / (tp * pp)  # parameters this GPU's model-parallel rank owns
    act = activation_bytes(
        seq_len=seq_len,
        micro_batch_size=micro_batch_size,
        d_model=model.d_model,
        heads=model.heads,
        layers=model.layers,
        tp=tp,
        pp=pp,
        activation_checkpointing=activation_checkpointing,
        flash_attention=flash_attention,
    )
    return Memory(
        weights=2.0 * shard / (dp if zero_stage >= 3 else 1),
        gradients=2.0 * shard / (dp if zero_stage >= 2 else 1),
        optimizer=12.0 * shard / (dp if zero_stage >= 1 else 1),
        activations=act,
        logits=4.0 * seq_len * micro_batch_size * vocab_size / tp,
        zero3_buffers=4.0 * model.layer_params / tp if zero_stage == 3 else 0.0,
    )


def min_gpus_to_fit(
    total_at: Callable[[int], float], capacity_bytes: float, tp: int, pp: int
) -> int | None:
    """The fewest GPUs that fit, given the bytes per GPU at each data-parallel degree
    (`total_at(dp)`); whole 8-GPU nodes once past one node, a multiple of tp·pp. None
    when no number of GPUs fits (ZeRO-0, or what ZeRO does not shard is too large).

    Bytes per GPU are fixed + sharded/dp (ZeRO divides model states by dp), so two
    evaluations give both terms and the smallest dp in closed form."""
    m = tp * pp
    one, two = total_at(1), total_at(2)
    sharded = 2.0 * (one - two)
    fixed = one - sharded
    if one <= capacity_bytes:
        dp = 1
    elif sharded <= 0 or fixed >= capacity_bytes:
        return None
    else:
        dp = max(1, math.ceil(sharded / (capacity_bytes - fixed)))
        while total_at(dp) > capacity_bytes:  # float rounding at the boundary
            dp += 1
    while m * dp > NODE_GPUS and (m * dp) % NODE_GPUS:
        dp += 1
    return m * dp
