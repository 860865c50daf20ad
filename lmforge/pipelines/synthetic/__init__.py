"""The `filter-synthetic` stage's pure-Python core: GPT-4 instruction data to clean chats.

One record goes through three steps, none of which knows about Ray:

    conv = to_conversation(record)          # RecordError -> quarantined
    found = first_finding(conv, filters)    # a Finding (reason, evidence) -> dropped
    text = render_text(conv)                # what pretraining reads

Modules: `formats` (Alpaca, ShareGPT, OpenAI messages, MT-Bench -> turns), `shape` (turn
order, length, truncation, repetition loops), `code` (bare-code answers: where
they end, whether the code is cut), `phrases` (refusals, disclaimers, identity
claims), `language` (language mismatch), `config` (the recipe section, the filter chain).
"""

from lmforge.pipelines.synthetic.base import ConversationFilter, Finding
from lmforge.pipelines.synthetic.config import (
    FILTERS,
    FilterName,
    SyntheticFilterConfig,
    default_filters,
    first_failure,
    first_finding,
)
from lmforge.pipelines.synthetic.formats import (
    ROLE_TOKENS,
    RecordError,
    Turn,
    answers,
    detect_format,
    exchanges,
    prompt_text,
    render_text,
    to_conversation,
)
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

__all__ = [
    "DEFAULT_MODELS", "DEFAULT_VENDORS", "FILTERS", "ROLE_TOKENS", "AnswerLengthConfig",
    "AnswerLengthFilter", "ConversationFilter", "EmptyAnswerFilter", "FilterName", "Finding",
    "IdentityConfig", "IdentityFilter", "MalformedTurnsConfig", "MalformedTurnsFilter",
    "RecordError", "RefusalConfig", "RefusalFilter", "RepetitionConfig", "RepetitionFilter",
    "SyntheticFilterConfig", "TruncationConfig", "TruncationFilter", "Turn", "answers",
    "default_filters", "detect_format", "exchanges", "first_failure", "first_finding",
    "prompt_text", "render_text", "to_conversation",
]  # fmt: skip
