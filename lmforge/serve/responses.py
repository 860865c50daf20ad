"""The response bodies, built from the `openai` package's own response types.

The server returns exactly the pydantic models the official client parses responses
into (`openai.types.Completion`, `openai.types.chat.ChatCompletion`, `ChatCompletionChunk`,
`openai.types.Model`), so the wire shapes cannot drift from the client's. They are
serialized with `exclude_unset=True`: the JSON carries the fields set here and none of
the many optional ones (`system_fingerprint`, `service_tier`, tool calls, ...) that this
server never produces. Fields that the API sends as `null` are therefore set to None
explicitly: `logprobs` of a choice that did not ask for them, `refusal` of a chat
message, and `usage` of every streamed chunk but the last.

One `CompletionBodies` / `ChatBodies` object holds the id, creation time (Unix seconds),
model name and whether logprobs were asked for, for one response; it builds the whole
body from the `n` results, or the streamed chunks of each choice (`index`), as the
`ChunkFormat` that `streaming.py` drives. Logprobs: completions send OpenAI's legacy
shape (`tokens`, `token_logprobs`, `top_logprobs` as `{token: logprob}`), chat the
`content` list of `ChatCompletionTokenLogprob`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, cast

from openai.types import Completion, CompletionChoice, CompletionUsage, Model
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionTokenLogprob,
    chat_completion,
    chat_completion_chunk,
)
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.chat.chat_completion_token_logprob import TopLogprob
from openai.types.completion_choice import Logprobs
from pydantic import BaseModel

from lmforge.serve.engine import FinishReason, GenerationResult, TokenLogprob

OWNER = "lmforge"  # `owned_by` of the served model


def to_json(body: BaseModel) -> dict[str, Any]:
    """The JSON object of a response body: the fields that were set, nothing else."""
    return body.model_dump(mode="json", exclude_unset=True)


def usage(prompt_tokens: int, completion_tokens: int) -> CompletionUsage:
    """Token counts, from the served model's own tokenizer."""
    return CompletionUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


class ModelList(BaseModel):
    """`GET /v1/models`: `{"object": "list", "data": [Model, ...]}`.

    The package has no response model for the list: the client parses it into
    `openai.pagination.SyncPage`, a pager bound to an HTTP client.
    """

    object: Literal["list"]
    data: list[Model]


def model_list(name: str, created: int, registry: dict[str, str] | None = None) -> ModelList:
    """The list of the one served model. `registry`: where a `models:/` model came from
    (`registry.model_version_info`), sent as extra `lmforge_*` fields of the model
    (the package's `Model` allows extra fields: the client keeps them in `model_extra`)."""
    info = registry or {}
    extra = {field: info[key] for key, field in REGISTRY_FIELDS.items() if info.get(key)}
    card = Model(id=name, object="model", created=created, owned_by=OWNER, **extra)
    return ModelList(object="list", data=[card])


# `model_version_info` key -> the extra field of the served model's card
REGISTRY_FIELDS = {
    "name": "lmforge_registered_model",
    "version": "lmforge_registry_version",
    "run_id": "lmforge_run_id",  # the run that trained the model
    "model_id": "lmforge_model_id",  # its LoggedModel
}


def completion_logprobs(tokens: list[TokenLogprob]) -> Logprobs:
    """The legacy completions shape: parallel lists, alternatives as `{token: logprob}`."""
    return Logprobs(
        tokens=[t.token for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[dict(t.top) for t in tokens],
    )


def chat_logprobs(tokens: list[TokenLogprob]) -> list[ChatCompletionTokenLogprob]:
    """The chat shape: one object per token, with its UTF-8 bytes and alternatives."""
    return [
        ChatCompletionTokenLogprob(
            token=t.token,
            bytes=list(t.token.encode()),
            logprob=t.logprob,
            top_logprobs=[
                TopLogprob(token=tok, bytes=list(tok.encode()), logprob=lp) for tok, lp in t.top
            ],
        )
        for t in tokens
    ]


@dataclass(frozen=True)
class CompletionBodies:
    """The `text_completion` objects of one `POST /v1/completions` response.

    Streamed, per choice: a chunk per piece of text (`finish_reason` null), then one with
    text "" and the finish reason; at the end (if asked for) one with no choices and the
    usage.
    """

    id: str
    created: int
    model: str
    logprobs: bool = False

    @classmethod
    def new(cls, model: str, *, logprobs: bool = False) -> CompletionBodies:
        return cls(f"cmpl-{uuid.uuid4().hex}", int(time.time()), model, logprobs)

    def whole(self, results: list[GenerationResult], counts: CompletionUsage) -> Completion:
        """The non-streamed response: one choice per result."""
        choices = [
            CompletionChoice(
                index=i,
                text=r.text,
                logprobs=self._logprobs(r.logprobs),
                finish_reason=r.finish_reason,
            )
            for i, r in enumerate(results)
        ]
        return self._body(choices, counts)

    def opening(self, index: int) -> list[BaseModel]:
        return []

    def text(self, index: int, text: str, logprobs: list[TokenLogprob]) -> BaseModel:
        return self._body([self._streamed_choice(index, text, None, logprobs)])

    def finish(self, index: int, reason: FinishReason | None) -> BaseModel:
        return self._body([self._streamed_choice(index, "", reason, [])])

    def usage(self, counts: CompletionUsage) -> BaseModel:
        return self._body([], counts)

    def _logprobs(self, tokens: list[TokenLogprob]) -> Logprobs | None:
        return completion_logprobs(tokens) if self.logprobs else None

    def _streamed_choice(
        self, index: int, text: str, finish: FinishReason | None, logprobs: list[TokenLogprob]
    ) -> CompletionChoice:
        # The package types `finish_reason` as never null (streamed and whole completions
        # share one type), but the API sends null until the last chunk, and the client
        # parses chunks without validating: construct the choice without validation too.
        return CompletionChoice.model_construct(
            index=index,
            text=text,
            logprobs=self._logprobs(logprobs),
            finish_reason=cast(Any, finish),
        )

    def _body(
        self, choices: list[CompletionChoice], counts: CompletionUsage | None = None
    ) -> Completion:
        return Completion(
            id=self.id,
            object="text_completion",
            created=self.created,
            model=self.model,
            choices=choices,
            usage=counts,
        )


@dataclass(frozen=True)
class ChatBodies:
    """The `chat.completion` (or `chat.completion.chunk`) objects of one chat response.

    Streamed, per choice: a chunk with delta `{"role": "assistant", "content": ""}`, a
    chunk per piece of text (`{"content": ...}`), one with delta `{}` and the finish
    reason; at the end (if asked for) one with no choices and the usage.
    """

    id: str
    created: int
    model: str
    logprobs: bool = False

    @classmethod
    def new(cls, model: str, *, logprobs: bool = False) -> ChatBodies:
        return cls(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model, logprobs)

    def whole(self, results: list[GenerationResult], counts: CompletionUsage) -> ChatCompletion:
        """The non-streamed response: one choice per result."""
        choices = [
            chat_completion.Choice(
                index=i,
                message=ChatCompletionMessage(role="assistant", content=r.text, refusal=None),
                logprobs=(
                    chat_completion.ChoiceLogprobs(content=chat_logprobs(r.logprobs))
                    if self.logprobs
                    else None
                ),
                finish_reason=r.finish_reason,
            )
            for i, r in enumerate(results)
        ]
        return ChatCompletion(
            id=self.id,
            object="chat.completion",
            created=self.created,
            model=self.model,
            choices=choices,
            usage=counts,
        )

    def opening(self, index: int) -> list[BaseModel]:
        return [self._chunk(index, ChoiceDelta(role="assistant", content=""), [])]

    def text(self, index: int, text: str, logprobs: list[TokenLogprob]) -> BaseModel:
        return self._chunk(index, ChoiceDelta(content=text), logprobs)

    def finish(self, index: int, reason: FinishReason | None) -> BaseModel:
        return self._chunk(index, ChoiceDelta(), [], reason)

    def usage(self, counts: CompletionUsage) -> BaseModel:
        return self._body([], counts)

    def _chunk(
        self,
        index: int,
        delta: ChoiceDelta,
        logprobs: list[TokenLogprob],
        finish: FinishReason | None = None,
    ) -> ChatCompletionChunk:
        choice = chat_completion_chunk.Choice(
            index=index,
            delta=delta,
            logprobs=(
                chat_completion_chunk.ChoiceLogprobs(content=chat_logprobs(logprobs))
                if self.logprobs and logprobs
                else None
            ),
            finish_reason=finish,
        )
        return self._body([choice])

    def _body(
        self, choices: list[chat_completion_chunk.Choice], counts: CompletionUsage | None = None
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            choices=choices,
            usage=counts,
        )
