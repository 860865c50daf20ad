"""Named model presets (Llama architecture) and the arithmetic that sizes them.

A preset fixes the shape of the network; the vocabulary size comes from the trained
tokenizer at run time. `estimate` gives parameter counts and the memory that
training needs per GPU under each ZeRO stage, so a recipe can be checked on paper
before a cluster is asked for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True, kw_only=True)
class ModelPreset:
    """Shape of a Llama-style decoder.

    hidden_size: width of the residual stream (d_model).
    intermediate_size: width of the SwiGLU MLP.
    num_layers: number of decoder blocks.
    num_heads: attention heads; head_dim = hidden_size / num_heads.
    num_kv_heads: key/value heads (grouped-query attention when < num_heads).
    max_seq_len: longest context the rotary embeddings are configured for.
    rope_theta: rotary base frequency.
    tie_embeddings: share input embedding and output projection (small models).
    """

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_seq_len: int
    rope_theta: float = 10_000.0
    tie_embeddings: bool = False

    def llama_config(self, *, vocab_size: int, eos_token_id: int, pad_token_id: int) -> Any:
        """The `transformers.LlamaConfig` for this preset and a tokenizer."""
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=self.max_seq_len,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            tie_word_embeddings=self.tie_embeddings,
            bos_token_id=eos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, ModelPreset] = {
    # ~0.1M non-embedding parameters: tests and CI, seconds per step on 2 CPU cores.
    "tiny": ModelPreset(
        hidden_size=64,
        intermediate_size=172,
        num_layers=2,
        num_heads=4,
        num_kv_heads=4,
        max_seq_len=512,
        tie_embeddings=True,
    ),
    # ~2M parameters: the laptop demo, a few minutes on 2 CPU cores.
    "demo": ModelPreset(
        hidden_size=192,
        intermediate_size=512,
        num_layers=4,
        num_heads=6,
        num_kv_heads=6,
        max_seq_len=1024,
        tie_embeddings=True,
    ),
    # ~125M at a 32k vocabulary (GPT-3 Small's width and depth, Llama blocks).
    "125m": ModelPreset(
        hidden_size=768,
        intermediate_size=2048,
        num_layers=12,
        num_heads=12,
        num_kv_heads=12,
        max_seq_len=2048,
        tie_embeddings=True,
    ),
    # ~350M at a 32k vocabulary (GPT-3 Medium's width and depth, Llama blocks).
    "350m": ModelPreset(
        hidden_size=1024,
        intermediate_size=2816,
        num_layers=24,
        num_heads=16,
        num_kv_heads=16,
        max_seq_len=2048,
        tie_embeddings=True,
    ),
    # Llama-3.2-1B's shape: fits one 80 GB GPU with ZeRO-1 and bf16.
    "1b": ModelPreset(
        hidden_size=2048,
        intermediate_size=8192,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        max_seq_len=8192,
        rope_theta=500_000.0,
        tie_embeddings=True,
    ),
    # Llama-2-7B's shape: one 8xH100 node with ZeRO-3.
    "7b": ModelPreset(
        hidden_size=4096,
        intermediate_size=11008,
        num_layers=32,
        num_heads=32,
        num_kv_heads=32,
        max_seq_len=4096,
    ),
    # Llama 3 8B's shape (8.03B at its 128,256-token vocabulary).
    "8b": ModelPreset(
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        max_seq_len=8192,
        rope_theta=500_000.0,
    ),
    # Llama 3 70B's shape (70.6B at 128,256 tokens).
    "70b": ModelPreset(
        hidden_size=8192,
        intermediate_size=28672,
        num_layers=80,
        num_heads=64,
        num_kv_heads=8,
        max_seq_len=8192,
        rope_theta=500_000.0,
    ),
    # Llama 3.1 405B's shape (405.9B at 128,256 tokens): the planner's published yardstick.
    "405b": ModelPreset(
        hidden_size=16384,
        intermediate_size=53248,
        num_layers=126,
        num_heads=128,
        num_kv_heads=8,
        max_seq_len=8192,
        rope_theta=500_000.0,
    ),
    # The MAI-1 scale plan: 405B's blocks, 156 deep, 501.5B dense parameters at the
    # recipe's 128,256-token vocabulary (the plan's 500B within 2%). Many 8xH100 nodes, ZeRO-3.
    "500b": ModelPreset(
        hidden_size=16384,
        intermediate_size=53248,
        num_layers=156,
        num_heads=128,
        num_kv_heads=8,
        max_seq_len=8192,
        rope_theta=500_000.0,
    ),
}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


@dataclass(frozen=True)
class Sizing:
    """Parameter count and per-GPU training memory (bytes) of a preset."""

    params: int
    params_non_embedding: int
    bytes_per_gpu: dict[int, float]  # ZeRO stage -> bytes of weights + grads + optimizer

    @property
    def params_b(self) -> float:
        return self.params / 1e9


@lru_cache(maxsize=64)
def meta_param_counts(preset: ModelPreset, vocab_size: int) -> tuple[int, int]:
    """(all parameters, those outside the embeddings and output head) of the model
    `transformers` builds for `preset`, counted on the meta device: no memory is taken,
    so the 500B preset counts in seconds on a laptop. A tied head is counted once."""
    import torch
    from transformers import LlamaForCausalLM

    config = preset.llama_config(vocab_size=vocab_size, eos_token_id=0, pad_token_id=1)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())  # parameters() skips a tied copy
    embedding = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    outside = sum(p.numel() for p in model.parameters() if id(p) in embedding)
    return int(total), int(total - outside)


def estimate(preset: ModelPreset, *, vocab_size: int, num_gpus: int) -> Sizing:
    """Count parameters (the model built on the meta device) and the model-state memory
    of mixed-precision Adam training.

    Model states per parameter (ZeRO paper, Rajbhandari et al. 2020, section 3):
    2 bytes bf16 weights + 2 bytes bf16 gradients + 12 bytes optimizer state
    (fp32 master weights, momentum, variance). Stage 1 shards the 12, stage 2 also the
    gradients, stage 3 everything. Activations are not included.
    """
    total, non_embedding = meta_param_counts(preset, vocab_size)
    n = max(1, num_gpus)
    per_gpu = {
        0: 16.0 * total,
        1: 4.0 * total + 12.0 * total / n,
        2: 2.0 * total + 14.0 * total / n,
        3: 16.0 * total / n,
    }
    return Sizing(params=total, params_non_embedding=non_embedding, bytes_per_gpu=per_gpu)
