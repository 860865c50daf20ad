"""Named model presets (Llama architecture) and the arithmetic that sizes them.

A preset fixes the shape of the network; the vocabulary size comes from the trained
tokenizer at run time. `estimate` gives parameter counts and the memory that
training needs per GPU under each ZeRO stage, so a recipe can be checked on paper
before a cluster is asked for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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
    # The MAI-1 scale plan (~500B dense parameters): many 8xH100 nodes, ZeRO-3.
    "500b": ModelPreset(
        hidden_size=16384,
        intermediate_size=53248,
        num_layers=148,
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


def estimate(preset: ModelPreset, *, vocab_size: int, num_gpus: int) -> Sizing:
    """Count parameters and the model-state memory of mixed-precision Adam training.

    Model states per parameter (ZeRO paper, Rajbhandari et al. 2020, section 3):
    2 bytes bf16 weights + 2 bytes bf16 gradients + 12 bytes optimizer state
    (fp32 master weights, momentum, variance). Stage 1 shards the 12, stage 2 also the
    gradients, stage 3 everything. Activations are not included.
    """
    h, f, n_layers = preset.hidden_size, preset.intermediate_size, preset.num_layers
    head_dim = h // preset.num_heads
    kv = preset.num_kv_heads * head_dim
    attn = h * h + 2 * h * kv + h * h  # q, k, v, o projections
    mlp = 3 * h * f  # gate, up, down (SwiGLU)
    norms = 2 * h
    per_layer = attn + mlp + norms
    embed = vocab_size * h
    head = 0 if preset.tie_embeddings else vocab_size * h
    non_embedding = n_layers * per_layer + h
    total = non_embedding + embed + head
    n = max(1, num_gpus)
    per_gpu = {
        0: 16.0 * total,
        1: 4.0 * total + 12.0 * total / n,
        2: 2.0 * total + 14.0 * total / n,
        3: 16.0 * total / n,
    }
    return Sizing(params=total, params_non_embedding=non_embedding, bytes_per_gpu=per_gpu)
