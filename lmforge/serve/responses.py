"""The response bodies, built from the `openai` package's own response types.

The server returns exactly the pydantic models the official client parses responses
into (`openai.types.Completion`, `openai.types.chat.ChatCompletion`, `ChatCompletionChunk`,
`openai.types.Model`), so the wire shapes cannot drift from the client's. They are
serialized with `exclude_unset=True`: the JSON carries the fields set here and none of
the many optional ones (`system_fingerprint`, `service_tier`, tool calls, ...) that this
server never produces. Fields that the API sends as `null` are therefore set to None
explicitly: `logprobs` of every choice, `refusal` of a chat message, and `usage` of every
streamed chunk but the last.

One `CompletionBodies` / `ChatBodies` object holds the id, creation time (Unix seconds)
and model name of one response, and builds its whole body or its streamed chunks (the
`ChunkFormat` that `streaming.py` drives).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, cast

from openai.types import Completion, CompletionChoice, CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice as ChatChoice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from pydantic import BaseModel

from lmforge.serve.engine import FinishReason

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


@dataclass(frozen=True)
class CompletionBodies:
    """The `text_completion` objects of one `POST /v1/completions` response.

    Streamed: a chunk per piece of text (`finish_reason` null), then one with text ""
    and the finish reason, then (if asked for) one with no choices and the usage.
    """

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, model: str) -> CompletionBodies:
        return cls(f"cmpl-{uuid.uuid4().hex}", int(time.time()), model)

    def whole(self, text: str, finish: FinishReason, counts: CompletionUsage) -> Completion:
        """The non-streamed response."""
        choice = CompletionChoice(index=0, text=text, logprobs=None, finish_reason=finish)
        return self._body([choice], counts)

    def opening(self) -> list[BaseModel]:
        return []

    def text(self, text: str) -> BaseModel:
        return self._body([self._streamed_choice(text, None)])

    def finish(self, reason: FinishReason | None) -> BaseModel:
        return self._body([self._streamed_choice("", reason)])

    def usage(self, counts: CompletionUsage) -> BaseModel:
        return self._body([], counts)

    @staticmethod
    def _streamed_choice(text: str, finish: FinishReason | None) -> CompletionChoice:
        # The package types `finish_reason` as never null (streamed and whole completions
        # share one type), but the API sends null until the last chunk, and the client
        # parses chunks without validating: construct the choice without validation too.
        return CompletionChoice.model_construct(
            index=0, text=text, logprobs=None, finish_reason=cast(Any, finish)
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

    Streamed: a chunk with delta `{"role": "assistant", "content": ""}`, a chunk per
    piece of text (`{"content": ...}`), one with delta `{}` and the finish reason, then
    (if asked for) one with no choices and the usage.
    """

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, model: str) -> ChatBodies:
        return cls(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model)

    def whole(self, text: str, finish: FinishReason, counts: CompletionUsage) -> ChatCompletion:
        """The non-streamed response."""
        message = ChatCompletionMessage(role="assistant", content=text, refusal=None)
        choice = ChatChoice(index=0, message=message, logprobs=None, finish_reason=finish)
        return ChatCompletion(
            id=self.id,
            object="chat.completion",
            created=self.created,
            model=self.model,
            choices=[choice],
            usage=counts,
        )

    def opening(self) -> list[BaseModel]:
        return [self._chunk(ChoiceDelta(role="assistant", content=""))]

    def text(self, text: str) -> BaseModel:
        return self._chunk(ChoiceDelta(content=text))

    def finish(self, reason: FinishReason | None) -> BaseModel:
        return self._chunk(ChoiceDelta(), reason)

    def usage(self, counts: CompletionUsage) -> BaseModel:
        return self._body([], counts)

    def _chunk(self, delta: ChoiceDelta, finish: FinishReason | None = None) -> ChatCompletionChunk:
        choice = ChunkChoice(index=0, delta=delta, logprobs=None, finish_reason=finish)
        return self._body([choice])

    def _body(
        self, choices: list[ChunkChoice], counts: CompletionUsage | None = None
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            choices=choices,
            usage=counts,
        )
