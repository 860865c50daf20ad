"""Serving engines: the `Engine` contract, and what every engine shares.

The HTTP layer (`app.py`) only talks to the `Engine` protocol, so a deployment can be
given another engine (vLLM on GPUs, a small fake in tests) through
`build_app(engine_factory=)`. `HFEngine` (`hf_engine.py`) is the transformers one.

An engine streams `GenerationDelta`s for one choice (`generate_stream`, an async
iterator); `generate` collects them, so a streamed answer and a whole one with the same
seed are the same text by construction. `TextStream` turns sampled token ids into final
text (held back while a character or a stop string may still be forming): every engine
that samples tokens uses it, so stop strings behave the same everywhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

# Why a generation ended: the one definition, used by the response bodies too. A subset
# of the API's values (no tool calls, no content filter).
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one choice. `temperature` 0 is greedy; `seed` None draws one;
    `logprobs` None returns none, k >= 0 returns each token's logprob and the k most
    likely alternatives (under the model's own distribution, before temperature)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None
    logprobs: int | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """One sampled token: its text, log-probability, and the `top` alternatives."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class GenerationDelta:
    """One step of a streamed generation.

    `text` is new text since the previous delta (may be empty while bytes of a character
    or a possible stop string are held back); `token_ids` are the tokens sampled since
    the previous delta, `logprobs` theirs (empty unless asked for). Only the last delta
    has a `finish_reason`.
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)


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
    logprobs: list[TokenLogprob] = field(default_factory=list)


class Engine(Protocol):
    """What the HTTP layer needs from a model: tokenization and generation.

    `encode_*` may be slow (a chat template, a long prompt): the app calls them in a
    worker thread. `generate_stream` is called on the event loop and must not block it;
    closing the iterator early (a stop string, a client gone) cancels the generation.
    """

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

    def generate_stream(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationDelta]:
        """Generate one choice as deltas; the last one has the finish reason."""
        ...


def local_model_dir(model: str) -> str:
    """A local Hugging Face folder for `model`: `models:/NAME@ALIAS` (or `/VERSION`) from
    the MLflow registry, an `s3://`/`gs://` folder copied to a temporary folder, or a
    local folder as is; each checked to hold config.json and safetensors weights (a
    pickle-only folder is refused, `platform.hf_model.check_model_dir`)."""
    import tempfile

    from lmforge.platform import storage
    from lmforge.platform.hf_model import check_model_dir
    from lmforge.platform.registry import resolve_model_dir

    if storage.is_remote(model):
        local = storage.download_dir(model, tempfile.mkdtemp(prefix="lmforge-serve-"))
        check_model_dir(local)
        return local
    return resolve_model_dir(model)


async def generate(
    engine: Engine, prompt_ids: list[int], params: SamplingParams
) -> GenerationResult:
    """A whole completion: the engine's stream, collected."""
    text: list[str] = []
    token_ids: list[int] = []
    logprobs: list[TokenLogprob] = []
    finish: FinishReason = "length"
    async for delta in engine.generate_stream(prompt_ids, params):
        text.append(delta.text)
        token_ids.extend(delta.token_ids)
        logprobs.extend(delta.logprobs)
        finish = delta.finish_reason or finish
    return GenerationResult("".join(text), token_ids, finish, logprobs)


class TextStream:
    """Sampled tokens in, final text out, one token at a time.

    Text is held back while it ends in an incomplete UTF-8 character (decoded as U+FFFD)
    or in a prefix of a stop string, so no delta ever has to be retracted. An EOS token
    ends the text (finish "stop") and carries none; a stop string ends it too and is cut.
    `decode(ids)` is the tokenizer's decode without special tokens.
    """

    def __init__(
        self, decode: Callable[[list[int]], str], stops: list[str] | None, eos_ids: set[int]
    ) -> None:
        self._decode = decode
        self._stops = [s for s in stops or [] if s]
        self._eos_ids = eos_ids
        self._generated: list[int] = []  # tokens that carry text (no EOS)
        self._text = ""
        self._emitted = 0  # characters of `_text` already sent
        self.done = False

    def push(self, token: int) -> tuple[str, FinishReason | None]:
        """Add one sampled token: (newly final text, the finish reason if it ended here)."""
        if token in self._eos_ids:
            return self._release("stop")
        self._generated.append(token)
        # Decoding the whole completion each step keeps byte-level merges right; the cost
        # is small next to a forward pass.
        self._text = self._decode(self._generated)
        # A trailing U+FFFD may be the first bytes of a character still being generated:
        # only the text before it is final, so only it is searched.
        stable = self._text.rstrip("\ufffd")
        if (hit := _find_stop(stable, self._stops)) is not None:
            return self._cut(hit)
        safe = _safe_length(stable, self._stops)
        if safe <= self._emitted:
            return "", None
        piece, self._emitted = self._text[self._emitted : safe], safe
        return piece, None

    def finish(self) -> tuple[str, FinishReason]:
        """The token budget is spent: the text is final, held-back text is released."""
        return self._release("length")

    def _release(self, reason: FinishReason) -> tuple[str, FinishReason]:
        if (hit := _find_stop(self._text, self._stops)) is not None:
            return self._cut(hit)
        self.done = True
        return self._text[self._emitted :], reason

    def _cut(self, hit: int) -> tuple[str, FinishReason]:
        self.done = True
        return self._text[self._emitted : max(hit, self._emitted)], "stop"


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
