"""The `synthetic.filters` recipe section and the filter chain it builds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lmforge.pipelines.synthetic.base import ConversationFilter, Finding
from lmforge.pipelines.synthetic.formats import Turn
from lmforge.pipelines.synthetic.phrases import (
    DEFAULT_MODELS,
    DEFAULT_VENDORS,
    IdentityConfig,
    IdentityFilter,
    RefusalConfig,
    RefusalFilter,
)
from lmforge.pipelines.synthetic.shape import (
    AnswerLengthConfig,
    AnswerLengthFilter,
    EmptyAnswerFilter,
    MalformedTurnsConfig,
    MalformedTurnsFilter,
    RepetitionConfig,
    RepetitionFilter,
    TruncationConfig,
    TruncationFilter,
)

FilterName = Literal[
    "malformed_turns", "empty_answer", "length", "truncated", "repetition", "identity",
    "refusal", "language_mismatch",
]  # fmt: skip
# The order the filters run in: cheap structural checks first; `repetition` before
# `truncated` because a loop usually runs into the token limit; `identity` before `refusal`
# because "I am an AI model made by OpenAI" is both and the more specific reason is the
# more useful count; the language model last.
FILTERS: tuple[FilterName, ...] = (
    "malformed_turns", "empty_answer", "length", "repetition", "truncated", "identity",
    "refusal", "language_mismatch",
)  # fmt: skip


class SyntheticFilterConfig(BaseModel):
    """The per-conversation filters' knobs (the `synthetic.filters` YAML section)."""

    model_config = ConfigDict(extra="forbid")

    enabled: list[FilterName] = Field(
        default=list(FILTERS),
        description="Filters to run (they run in a fixed order: " + ", ".join(FILTERS) + ").",
    )
    min_answer_chars: int = Field(
        default=0,
        ge=0,
        description="Drop answers with fewer non-space characters as short_answer; 0 disables. "
        'Keep it low: "4" is a right answer to 2+2.',
    )
    max_answer_chars: int = Field(
        default=24_000,
        ge=0,
        description="Drop answers longer than this as long_answer; 0 disables.",
    )
    refusal_window_chars: int = Field(
        default=200,
        ge=0,
        description="A refusal phrase starting within this many characters of an answer drops it.",
    )
    vendor_names: list[str] = Field(
        default=list(DEFAULT_VENDORS),
        description="Companies the assistant must not claim made it (case-sensitive).",
    )
    model_names: list[str] = Field(
        default=list(DEFAULT_MODELS),
        description="Models the assistant must not claim to be (case-sensitive).",
    )
    require_final_assistant: bool = Field(
        default=False,
        description="Also drop conversations that end on an unanswered user turn.",
    )
    token_limits: list[int] = Field(
        default=list(TruncationConfig().token_limits),
        description="Round max_tokens settings: an answer of about this many tokens that "
        "ends without punctuation is truncated/token_limit.",
    )
    repetition_ngram: int = Field(
        default=10, ge=3, description="Words per n-gram of the repetition-loop rule."
    )
    max_line_repeats: int = Field(
        default=4, ge=1, description="A line or paragraph occurring more often than this is a loop."
    )
    language_min_score: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="language_mismatch judges only texts whose language score reaches this.",
    )


def default_filters(cfg: SyntheticFilterConfig | None = None) -> list[ConversationFilter]:
    """The filters `cfg` enables, in the order of FILTERS."""
    cfg = cfg or SyntheticFilterConfig()
    makers = {
        "malformed_turns": lambda: MalformedTurnsFilter(
            MalformedTurnsConfig(require_final_assistant=cfg.require_final_assistant)
        ),
        "empty_answer": EmptyAnswerFilter,
        "length": lambda: AnswerLengthFilter(
            AnswerLengthConfig(
                min_answer_chars=cfg.min_answer_chars, max_answer_chars=cfg.max_answer_chars
            )
        ),
        "truncated": lambda: TruncationFilter(
            TruncationConfig(token_limits=tuple(cfg.token_limits))
        ),
        "repetition": lambda: RepetitionFilter(
            RepetitionConfig(ngram=cfg.repetition_ngram, max_line_repeats=cfg.max_line_repeats)
        ),
        "identity": lambda: IdentityFilter(
            IdentityConfig(vendor_names=tuple(cfg.vendor_names), model_names=tuple(cfg.model_names))
        ),
        "refusal": lambda: RefusalFilter(RefusalConfig(window_chars=cfg.refusal_window_chars)),
        "language_mismatch": lambda: _language_filter(cfg.language_min_score),
    }
    return [makers[name]() for name in FILTERS if name in cfg.enabled]


def _language_filter(min_score: float) -> ConversationFilter:
    from lmforge.pipelines.synthetic.language import LanguageMatchConfig, LanguageMismatchFilter

    return LanguageMismatchFilter(LanguageMatchConfig(min_score=min_score))


def first_finding(conv: Sequence[Turn], filters: Iterable[ConversationFilter]) -> Finding | None:
    """The first filter's Finding against `conv`, or None to keep it."""
    conv = [dict(t) for t in conv]  # Ray Data may hand over an array of turns
    for f in filters:
        if (found := f.inspect(conv)) is not None:
            return found
    return None


def first_failure(conv: Sequence[Turn], filters: Iterable[ConversationFilter]) -> str | None:
    """The first filter's reason code for dropping `conv`, or None to keep it."""
    found = first_finding(conv, filters)
    return None if found is None else found.reason
