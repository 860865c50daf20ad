"""Serving engines: the `Engine` contract and `HFEngine`, a transformers implementation.

The HTTP layer (`app.py`) only talks to the `Engine` protocol, so a deployment can be
given another engine (vLLM on GPUs, a fake in tests) through `build_app(engine_factory=)`.

`HFEngine` decodes one request at a time with a KV cache: one forward pass over the
prompt, then one pass per generated token. The non-streaming `generate` consumes the
streaming generator, so a streamed answer and a non-streamed one with the same seed are
the same text by construction.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import torch

# Why a generation ended: the one definition, used by the response bodies too. A subset
# of the API's values (no tool calls, no content filter).
FinishReason = Literal["stop", "length"]

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class GenerationResult:
    """A finished generation.

    `token_ids` are all sampled tokens, including an EOS that ended the generation and
    the tokens of a matched stop string (they were computed, so they are counted in
    `usage.completion_tokens`, as vLLM does); `text` excludes both.
    """

    text: str
    token_ids: list[int]
    finish_reason: FinishReason


@dataclass(frozen=True)
class GenerationDelta:
    """One step of a streamed generation.

    `text` is new text since the previous delta (may be empty while bytes of a character
    or a possible stop string are held back); `token_ids` are the tokens sampled since
    the previous delta. Only the last delta has a `finish_reason`.
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None


class Engine(Protocol):
    """What the HTTP layer needs from a model: tokenization and generation."""

    @property
    def max_context_length(self) -> int:
        """Most tokens (prompt + completion) the model accepts."""
        ...

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a completion prompt."""
        ...

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a conversation rendered by the chat template, ready to answer."""
        ...

    def generate(
        self,
        prompt_ids: list[int],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> GenerationResult:
        """Generate a whole completion."""
        ...

    def generate_stream(
        self,
        prompt_ids: list[int],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> Generator[GenerationDelta, None, None]:
        """Generate a completion as deltas; the last one has the finish reason."""
        ...


class HFEngine:
    """A causal LM and its tokenizer, loaded from a local Hugging Face directory.

    The directory holds safetensors weights, `config.json` and the tokenizer files, as
    written by `save_pretrained`; it is loaded by `lmforge.platform.hf_model`, which
    refuses pickle-only folders and picks the dtype (bf16 on CUDA, fp32 on CPU).
    `device` is `"auto"` (CUDA when available, else CPU) or any torch device string.
    """

    def __init__(self, model_dir: str, *, device: str = "auto") -> None:
        from lmforge.platform.hf_model import load_causal_lm, pick_device

        self.device = pick_device(device)
        self.model, self.tokenizer = load_causal_lm(model_dir, device=str(self.device))

        vocab = self.model.config.vocab_size
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self._eos_ids = {i for i in eos_ids if i is not None and i < vocab}
        # Padding is never a meaningful output token.
        pad = self.tokenizer.pad_token_id
        self._never_ids = [pad] if pad is not None and pad not in self._eos_ids else []
        # min_new_tokens=1: the first token must carry text, so an undertrained model
        # cannot answer with nothing (EOS) or with a special token that decodes to "".
        # Added tokens flagged special (chat-role markers) count too: decode skips them.
        special = set(self.tokenizer.all_special_ids) | {
            i for i, tok in self.tokenizer.added_tokens_decoder.items() if tok.special
        }
        self._banned_first = sorted({i for i in special if i < vocab} | self._eos_ids)
        logger.info(
            "HFEngine loaded %s: %s, %.1fM parameters, vocab %d, %s on %s",
            model_dir,
            type(self.model).__name__,
            sum(p.numel() for p in self.model.parameters()) / 1e6,
            vocab,
            self.model.dtype,
            self.device,
        )

    @property
    def max_context_length(self) -> int:
        """`max_position_embeddings` of the model config."""
        return int(self.model.config.max_position_embeddings)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids as `tokenizer(prompt)` gives them (with BOS where the tokenizer adds it)."""
        return list(self.tokenizer(prompt)["input_ids"])

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Render with the tokenizer's chat template and an open assistant turn."""
        encoded: Any = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True
        )
        # transformers 5 returns a BatchEncoding (return_dict=True by default), 4.x a list.
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return list(ids)

    def generate(
        self,
        prompt_ids: list[int],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> GenerationResult:
        """Generate a whole completion (see `GenerationResult` for what is counted)."""
        text: list[str] = []
        token_ids: list[int] = []
        finish: FinishReason = "length"
        for delta in self.generate_stream(
            prompt_ids,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            seed=seed,
        ):
            text.append(delta.text)
            token_ids.extend(delta.token_ids)
            finish = delta.finish_reason or finish
        return GenerationResult("".join(text), token_ids, finish)

    def generate_stream(
        self,
        prompt_ids: list[int],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> Generator[GenerationDelta, None, None]:
        """Sample up to `max_tokens` tokens, yielding text as soon as it is final.

        Text is held back while it ends in an incomplete UTF-8 character (decoded as
        U+FFFD) or in a prefix of a stop string, so no delta ever has to be retracted.
        The generator may be resumed from different threads: no torch context manager
        is held across a `yield` (grad mode is thread-local).
        """
        import torch

        if not prompt_ids:
            raise ValueError("the prompt has no tokens")
        stops = [s for s in stop or [] if s]
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)

        input_ids = torch.tensor([prompt_ids], device=self.device)  # (1, T)
        cache: Any = None
        generated: list[int] = []  # tokens that carry text (no EOS)
        pending: list[int] = []  # tokens sampled since the last delta
        text, emitted = "", 0  # decoded text, and how many characters of it were yielded
        finish: FinishReason = "length"
        for step in range(max_tokens):
            logits, cache = self._forward(input_ids, cache)
            token = self._sample(logits, step == 0, temperature, top_p, generator)
            pending.append(token)
            if token in self._eos_ids:
                finish = "stop"
                break
            generated.append(token)
            # Decoding the whole completion each step keeps byte-level merges right;
            # the cost is negligible next to a forward pass.
            text = str(
                self.tokenizer.decode(
                    generated, skip_special_tokens=True, clean_up_tokenization_spaces=False
                )
            )
            # A trailing U+FFFD may be the first bytes of a character still being
            # generated: only the text before it is final, so only it is searched.
            stable = text.rstrip("\ufffd")
            hit = _find_stop(stable, stops)
            if hit is not None:
                yield GenerationDelta(text[emitted : max(hit, emitted)], pending, "stop")
                return
            safe = _safe_length(stable, stops)
            if safe > emitted:
                yield GenerationDelta(text[emitted:safe], pending)
                emitted, pending = safe, []
            input_ids = torch.tensor([[token]], device=self.device)  # (1, 1)
        # The text is final now: what was held back is released (or cut at a stop string).
        hit = _find_stop(text, stops)
        if hit is not None:
            yield GenerationDelta(text[emitted : max(hit, emitted)], pending, "stop")
        else:
            yield GenerationDelta(text[emitted:], pending, finish)

    def _forward(self, input_ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        """One decoder pass; returns last-position logits (V,) and the grown KV cache."""
        import torch

        with torch.inference_mode():
            # `cache` is the transformers >= 5.2x name (`past_key_values` is deprecated);
            # logits_to_keep=1 skips the (T, V) logits of the prompt positions.
            out = self.model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1], out.cache

    def _sample(
        self,
        logits: torch.Tensor,
        first: bool,
        temperature: float,
        top_p: float,
        generator: torch.Generator,
    ) -> int:
        """Pick the next token from logits (V,): greedy at temperature 0, else top-p."""
        import torch

        with torch.inference_mode():
            logits = logits.to(torch.float32, copy=True)
            logits[self._never_ids] = float("-inf")
            if first:
                logits[self._banned_first] = float("-inf")
            if temperature == 0:
                return int(torch.argmax(logits))
            probs = torch.softmax(logits / temperature, dim=-1)
            if top_p < 1.0:
                sorted_probs, order = torch.sort(probs, descending=True)
                # Drop a token when the mass before it already reaches top_p; the most
                # likely token always stays.
                drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p
                sorted_probs[drop] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
            return int(torch.multinomial(probs, 1, generator=generator))


def _find_stop(text: str, stops: list[str]) -> int | None:
    """Index where the earliest stop string starts in `text`, or None."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _safe_length(text: str, stops: list[str]) -> int:
    """Length of the prefix of final `text` that no later token can cut at a stop string.

    A suffix of `text` that starts a stop string may grow into that stop string.
    """
    safe = len(text)
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                safe = min(safe, len(text) - k)
                break
    return safe
