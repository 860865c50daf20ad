"""OpenAI-compatible request models for the serving API.

Requests are validated by these models, so a wrong type, a missing field or an
unsupported option becomes a 400 with `param` naming the field (see `errors.py`).
Unknown request fields are ignored, as vLLM does, so clients that send newer options
still work.

They are written here rather than taken from the `openai` package: its request
parameters (`CompletionCreateParams`, ...) are TypedDicts for building a client's
request, with no validation, no defaults and no way to reject what this server does not
support (`echo`, several prompts). Responses, on the other hand, are the package's own
pydantic models (see `responses.py`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# OpenAI accepts at most four stop sequences; more is a client bug worth reporting.
MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 16  # `n`: each choice is a request of its own in the engine's batch
MAX_TOP_LOGPROBS = 20  # as OpenAI's chat API (its completions API stops at 5, vLLM at 20)


def _normalise_stop(value: str | list[str] | None) -> list[str] | None:
    """`stop` as a list of non-empty strings (OpenAI accepts a string or a list)."""
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if len(stops) > MAX_STOP_SEQUENCES:
        raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are supported")
    if any(not s for s in stops):
        raise ValueError("stop sequences must be non-empty strings")
    return stops


class StreamOptions(BaseModel):
    """`stream_options`: whether the last streamed chunk carries token usage."""

    include_usage: bool = Field(False, description="Send a final chunk with `usage`.")


class _Request(BaseModel):
    """Fields shared by both generation endpoints."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="Served model name; must match the deployment's.")
    temperature: float = Field(
        1.0, ge=0.0, le=2.0, description="Sampling temperature; 0 means greedy decoding."
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="Number of choices to generate.")
    stop: str | list[str] | None = Field(
        None, description="Up to four sequences that end generation (not returned)."
    )
    seed: int | None = Field(
        None, ge=-(2**63), le=2**64 - 1, description="Seed for reproducible sampling."
    )
    stream: bool = Field(False, description="Stream Server-Sent Events instead of JSON.")
    stream_options: StreamOptions | None = Field(None, description="Streaming options.")
    user: str | None = Field(None, description="End-user id; accepted and ignored.")

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> list[str] | None:
        return _normalise_stop(value)

    @property
    def stop_list(self) -> list[str] | None:
        """`stop` after validation, always a list (or None)."""
        return self.stop if self.stop is None or isinstance(self.stop, list) else [self.stop]


class CompletionRequest(_Request):
    """Body of `POST /v1/completions`."""

    prompt: str | list[str] = Field(description="The prompt: a string or a list of one.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    echo: bool = Field(False, description="Not supported; must be false.")
    logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="Return each token's logprob and this many most likely alternatives.",
    )

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        # Batched prompts would need n*len(prompt) choices; keep the contract narrow.
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError("exactly one prompt is supported")
        return prompt

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, echo: bool) -> bool:
        if echo:
            raise ValueError("echo is not supported")
        return echo

    @property
    def top_logprobs_count(self) -> int | None:
        """Alternatives per token, or None for no logprobs."""
        return self.logprobs

    @property
    def prompt_text(self) -> str:
        """The single prompt string."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TextPart(BaseModel):
    """A text content part; other part types (images, audio) are rejected."""

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One input message. `developer` is OpenAI's newer name for `system`."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_template_message(self) -> dict[str, str]:
        """The `{"role", "content"}` dict a chat template expects (content as text)."""
        text = self.content
        if isinstance(text, list):
            # Same joining rule as vLLM: text parts become lines of one message.
            text = "\n".join(part.text for part in text)
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": text}


class ChatCompletionRequest(_Request):
    """Body of `POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation.")
    max_tokens: int | None = Field(None, ge=1, description="Deprecated alias.")
    max_completion_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    logprobs: bool = Field(False, description="Return the logprob of each generated token.")
    top_logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="Most likely alternatives per token."
    )

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_need_logprobs(cls, top: int | None, info: ValidationInfo) -> int | None:
        # `logprobs` is declared first, so it is validated (and in `info.data`) by now
        if top and not info.data.get("logprobs"):
            raise ValueError("top_logprobs requires logprobs to be true")
        return top

    @property
    def top_logprobs_count(self) -> int | None:
        """Alternatives per token, or None for no logprobs."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def token_limit(self) -> int | None:
        """`max_completion_tokens`, falling back to the older `max_tokens`."""
        return self.max_completion_tokens or self.max_tokens
