"""Pure-Python core of the `filter-synthetic` stage: GPT-4 instruction data to clean text.

One record goes through three steps, none of which knows about Ray:

    conv = to_conversation(record)          # RecordError -> quarantined
    reason = first_failure(conv, filters)   # a reason code -> dropped, None -> kept
    text = render_text(conv)                # what pretraining reads

A conversation is a list of turns `{"role": "system" | "user" | "assistant", "content": str}`.
Each filter is a small class with `name` (its reason code) and `check(conv) -> str | None`.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "REASONS", "ROLE_TOKENS", "ConversationFilter", "EmptyAnswerFilter", "IdentityConfig",
    "IdentityFilter", "MalformedTurnsConfig", "MalformedTurnsFilter", "RecordError",
    "RefusalConfig", "RefusalFilter", "ShortAnswerConfig", "ShortAnswerFilter",
    "SyntheticFilterConfig", "default_filters", "detect_format", "first_failure", "render_text",
    "to_conversation",
]  # fmt: skip

Turn = dict[str, str]
Reason = Literal["malformed_turns", "empty_answer", "short_answer", "identity", "refusal"]
# The order in which `default_filters` runs them: cheap structural checks first, and
# `identity` before `refusal` because "I am an AI model made by OpenAI" is both, and the
# more specific reason is the more useful count.
REASONS: tuple[Reason, ...] = (
    "malformed_turns", "empty_answer", "short_answer", "identity", "refusal"
)  # fmt: skip
# The tokenizer's chat template renders turns the same way (see `render_text`).
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}


class RecordError(ValueError):
    """A record whose shape is none of the known formats; the message says what is wrong."""


# ---------------------------------------------------------------------------- formats

_FORMAT_KEYS = {"messages": "openai", "conversations": "sharegpt", "instruction": "alpaca"}
_SHAREGPT_ROLES = {
    **dict.fromkeys(("human", "user"), "user"),
    **dict.fromkeys(("gpt", "assistant", "chatgpt", "bing", "bard"), "assistant"),
    "system": "system",
}
_OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}  # fmt: skip


def detect_format(record: Any) -> str:
    """Return "alpaca", "sharegpt" or "openai" from the record's keys, or raise RecordError."""
    if not isinstance(record, dict):
        raise RecordError(f"record is a {type(record).__name__}, not an object")
    found = [key for key in _FORMAT_KEYS if key in record]
    if not found:
        raise RecordError("record has neither 'instruction' nor 'conversations' nor 'messages'")
    if len(found) > 1:  # guessing would silently drop half of the record
        raise RecordError(f"record has both {found[0]!r} and {found[1]!r}; its format is unclear")
    return _FORMAT_KEYS[found[0]]


def _text(value: Any, where: str) -> str:
    """A turn's text, stripped; OpenAI's list of text parts is joined."""
    if isinstance(value, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in value
    ):
        value = "".join(p["text"] for p in value)
    if not isinstance(value, str):
        raise RecordError(f"{where} is not a string (got {type(value).__name__})")
    return value.strip()


def _turns(record: dict, key: str, role_key: str, text_key: str, roles: dict) -> list[Turn]:
    turns = record[key]
    if not isinstance(turns, list):
        raise RecordError(f"{key!r} is a {type(turns).__name__}, not a list")
    conv: list[Turn] = []
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise RecordError(f"{where} is a {type(turn).__name__}, not an object")
        for field in (role_key, text_key):
            if field not in turn:
                raise RecordError(f"{where} has no {field!r}")
        raw = turn[role_key]
        role = roles.get(raw.strip().lower()) if isinstance(raw, str) else None
        if role is None:
            raise RecordError(f"{where} has unknown role {raw!r}")
        conv.append({"role": role, "content": _text(turn[text_key], f"{where}.{text_key}")})
    return conv


def _alpaca(record: dict) -> list[Turn]:
    instruction = _text(record["instruction"], "'instruction'")
    extra = record.get("input")
    extra = "" if extra is None else _text(extra, "'input'")
    answer_key = next((k for k in ("output", "response") if k in record), None)
    if answer_key is None:
        raise RecordError("record has 'instruction' but neither 'output' nor 'response'")
    conv: list[Turn] = []
    system = record.get("system")
    if system is not None and (system := _text(system, "'system'")):
        conv.append({"role": "system", "content": system})
    prompt = "\n\n".join(part for part in (instruction, extra) if part)
    conv.append({"role": "user", "content": prompt})
    conv.append({"role": "assistant", "content": _text(record[answer_key], repr(answer_key))})
    return conv


def to_conversation(record: Any) -> list[Turn]:
    """Map one Alpaca, ShareGPT or OpenAI-messages record to a list of turns.

    Contents are stripped of surrounding whitespace so that `render_text` is canonical.
    Raises RecordError for a record of unknown shape (the message names the field).
    """
    fmt = detect_format(record)
    if fmt == "alpaca":
        return _alpaca(record)
    if fmt == "sharegpt":
        return _turns(record, "conversations", "from", "value", _SHAREGPT_ROLES)
    return _turns(record, "messages", "role", "content", _OPENAI_ROLES)


def render_text(conv: Sequence[Turn]) -> str:
    """Plain text for pretraining: "<|user|>\\nWhat is 2+2?\\n<|assistant|>\\n4"."""
    return "\n".join(f"{ROLE_TOKENS[t['role']]}\n{t['content']}" for t in conv)


# ---------------------------------------------------------------------------- filters


class ConversationFilter(Protocol):
    """A step's narrow contract: `None` keeps the conversation, a reason code drops it."""

    name: str

    def check(self, conv: Sequence[Turn]) -> str | None: ...


def _answers(conv: Sequence[Turn]) -> list[str]:
    return [t["content"] for t in conv if t["role"] == "assistant"]


def _prompt(conv: Sequence[Turn]) -> str:
    """What the assistant was asked: every user and system turn."""
    return "\n".join(t["content"] for t in conv if t["role"] != "assistant")


@dataclass(frozen=True, kw_only=True)
class MalformedTurnsConfig:
    require_final_assistant: bool = False
    """Also drop conversations ending on an unanswered user turn (truncated ShareGPT)."""


class MalformedTurnsFilter:
    """No assistant turn, not opened by the user, a role speaking twice, or an empty prompt."""

    name = "malformed_turns"

    def __init__(self, config: MalformedTurnsConfig | None = None) -> None:
        self.config = config or MalformedTurnsConfig()

    def check(self, conv: Sequence[Turn]) -> str | None:
        # A system prompt is only meaningful before the dialogue starts.
        body = conv[1:] if len(conv) > 0 and conv[0]["role"] == "system" else conv
        roles = [t["role"] for t in body]
        if "assistant" not in roles or roles[0] != "user" or "system" in roles:
            return self.name
        if any(a == b for a, b in pairwise(roles)):
            return self.name
        if any(t["role"] == "user" and not t["content"] for t in body):
            return self.name
        if self.config.require_final_assistant and roles[-1] != "assistant":
            return self.name
        return None


class EmptyAnswerFilter:
    """An assistant turn with no visible character."""

    name = "empty_answer"

    def check(self, conv: Sequence[Turn]) -> str | None:
        return self.name if any(not a.strip() for a in _answers(conv)) else None


@dataclass(frozen=True, kw_only=True)
class ShortAnswerConfig:
    min_answer_chars: int = 1
    """Fewest non-space characters an answer may have; keep it low ("4" answers 2+2)."""


class ShortAnswerFilter:
    """A non-empty assistant turn shorter than `min_answer_chars` (stripped)."""

    name = "short_answer"

    def __init__(self, config: ShortAnswerConfig | None = None) -> None:
        self.config = config or ShortAnswerConfig()

    def check(self, conv: Sequence[Turn]) -> str | None:
        short = (0 < len(a.strip()) < self.config.min_answer_chars for a in _answers(conv))
        return self.name if any(short) else None


# Curly apostrophes are common in GPT output; mapping them one-to-one keeps match offsets.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_I_CANT = (
    r"I(?:\s+can(?:not|'t)|\s+can\s+not|(?:\s+am|'m)\s+(?:unable|not\s+able|not\s+allowed)\s+to"
    r"|\s+(?:won't|will\s+not)\s+be\s+able\s+to|\s+must\s+decline\s+to)"
)
# What an assistant refuses to do. Characters in role-play say "I can't come" or "I can't help
# laughing", so the object must look like a request, not any verb at all.
_REFUSED = (
    r"(?:fulfil+|comply|assist|browse|help\s+(?:you|with)\b"
    r"|(?:provide|create|generate|write|produce|share|give)\s+(?:you\s+)?(?:that|this|such|any"
    r"|the\s+requested|content|information|assistance|advice|opinions?|explicit|real-time"
    r"|medical|legal|financial|personal|specific)\b"
    r"|(?:answer|respond\s+to|engage\s+(?:in|with)|continue|complete|discuss|process)"
    r"\s+(?:that|this|such|your|these)\s+(?:\w+\s+)?(?:request|question|task|query|prompt"
    r"|topic|conversation|activity|content|role-?play|scenario)"
    r"|do\s+(?:that|so)\b|access\s+(?:the\s+internet|real-time|external|current|personal)"
    r"|(?:view|see|open)\s+(?:the\s+)?(?:images?|pictures?|photos?|files?|links?|attachments?)"
    r"|role-?\s?play\b|pretend\b|impersonate\b|predict\s+(?:the\s+)?future"
    r"|(?:express|have|form|hold)\s+(?:personal\s+|my\s+own\s+)?(?:opinions|views|feelings"
    r"|emotions|preferences|beliefs))"
)
_AN_AI = r"an?\s+(?:AI|artificial\s+intelligence)(?:[\s-]+(?:language\s+model|model|assistant))?"


def _any_of(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


# Refusals: they count where they are the answer (its opening, or most of it).
_REFUSAL = _any_of(
    rf"\b{_I_CANT}\s+{_REFUSED}",
    rf"\b(?:sorry|I\s+apologi[sz]e),?\s+(?:but\s+)?{_I_CANT}(?:\s+do\s+(?:that|this))?\s*[.!]",
    r"\b(?:it\s+is|it's)\s+not\s+appropriate\s+(?:for\s+(?:me|an\s+AI)\s+to\b|to\s+(?:make"
    r"|provide|express|speculate|comment|judge|assign|rank|generalize|stereotype)\b)",
    r"申し訳(?:ありません|ございません)が[^。！？\n]{0,60}?(?:できません|できかねます|いたしかねます)",
)
# AI disclaimers: out of place anywhere, unless the prompt cast the assistant as an AI.
_AI_DISCLAIMER = _any_of(
    r"\bas\s+an?\s+(?:large\s+)?(?:AI\s+)?language\s+model\b",
    rf"\bas\s+{_AN_AI}\s*,\s*I\b",
    rf"\bI(?:'m|\s+am)\s+(?:just\s+|only\s+|merely\s+|simply\s+)?(?:{_AN_AI}|a\s+language\s+model)\b",
    r"\bI\s+(?:do\s+not|don't)\s+(?:have|possess|hold)\s+(?:any\s+)?(?:personal|human|my\s+own)"
    r"\s+(?:opinions|feelings|emotions|experiences|beliefs|preferences|views)",
    r"AI言語モデルとして|私は(?:AI|人工知能)(?:言語モデル|アシスタント)?(?:です|であり|なので)",
)
# A training cutoff: out of place anywhere, since no character, AI or not, has one.
_CUTOFF = _any_of(
    r"\bmy\s+(?:knowledge|training)(?:\s+data)?\s+cut-?\s?off",
    r"\bmy\s+training\s+data\s+(?:only\s+)?(?:goes|extends|includes)",
    r"\bas\s+of\s+my\s+(?:last|latest)\s+(?:knowledge\s+|training\s+)?(?:update|training)\s+(?:in|on)\b",
)
# "You are an AI...", "Roleplay as a futuristic AI therapist", "a story told by a robot".
_CASTS_AS_AI = _any_of(
    r"\b(?:you\s+are|you're|as|be|imagine|pretend|play(?:ing)?|act(?:ing)?|assume|role-?\s?play"
    r"|told\s+by|narrated\s+by|perspective\s+of|point\s+of\s+view\s+of|voice\s+of)\s+"
    r"(?:[\w']+\s+){0,4}?(?:an?|the)\s+(?:[\w-]+\s+){0,2}?(?:AI|A\.I\.|artificial\s+intelligence"
    r"|language\s+model|chatbot|robot|android|virtual\s+assistant|computer\s+program)\b"
)
_SENTENCE_END = re.compile(r"[.!?。！？\n]")


def _quoted(text: str, pos: int) -> bool:
    """Whether `pos` is inside quoted speech on its paragraph: a character talking.

    Looks back at most 2,000 characters, which keeps a huge paragraph linear to scan.
    """
    start = max(text.rfind("\n", 0, pos) + 1, pos - 2000)
    line = text[start : pos + 1]  # + 1: the match's first letter
    if (
        line.count('"') % 2
        or line.count("“") > line.count("”")
        or line.count("「") > line.count("」")
    ):
        return True
    # Single quotes double as apostrophes ("can't"): count only those opening a word after a
    # space and those closing one before a space or punctuation.
    opening = len(re.findall(r"(?:^|(?<=[\s(\[—-]))'(?=\w)", line))
    return opening > len(re.findall(r"(?<=[\w.,!?])'(?=[\s.,;:!?)]|$)", line))


@dataclass(frozen=True, kw_only=True)
class RefusalConfig:
    window_chars: int = 200
    """A refusal phrase starting this early in an answer is the answer, not a passing mention."""
    mostly_fraction: float = 0.5
    """Later refusal phrases count when their sentences make up this share of the answer."""


class RefusalFilter:
    """An assistant turn that is a refusal or an AI disclaimer (English and basic Japanese).

    Refusal phrases count in an answer's opening `window_chars`, or when the sentences holding
    them are most of the answer: deep in a long helpful answer (a story where a character
    apologises) they are a passing mention. AI disclaimers and training-cutoff remarks count
    anywhere, disclaimers only unless the prompt cast the assistant as an AI. Quoted speech
    never counts: it is a character talking.
    """

    name = "refusal"

    def __init__(self, config: RefusalConfig | None = None) -> None:
        self.config = config or RefusalConfig()

    def check(self, conv: Sequence[Turn]) -> str | None:
        anywhere = [_CUTOFF]
        if not _CASTS_AS_AI.search(_prompt(conv)):
            anywhere.append(_AI_DISCLAIMER)
        for answer in _answers(conv):
            text = answer.translate(_APOSTROPHES)
            if any(self._found(p, text) for p in anywhere) or self._is_refusal(text):
                return self.name
        return None

    @staticmethod
    def _found(pattern: re.Pattern[str], text: str) -> bool:
        return any(not _quoted(text, m.start()) for m in pattern.finditer(text))

    def _is_refusal(self, text: str) -> bool:
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        sentences = set()  # (start, end) spans of the sentences holding a refusal phrase
        for m in _REFUSAL.finditer(text):
            if _quoted(text, m.start()):
                continue
            if m.start() < self.config.window_chars:
                return True
            i = bisect.bisect_right(ends, m.start())
            sentences.add((ends[i - 1] if i else 0, ends[i] if i < len(ends) else len(text)))
        covered = sum(end - start for start, end in sentences)
        return bool(sentences) and covered >= self.config.mostly_fraction * len(text)


DEFAULT_VENDORS = (
    "OpenAI", "Anthropic", "Google DeepMind", "Google", "DeepMind", "Meta AI", "Meta",
    "Facebook", "Mistral AI", "Mistral", "Alibaba Cloud", "Alibaba",
)  # fmt: skip
DEFAULT_MODELS = (
    "ChatGPT", "GPT-4o", "GPT-4", "GPT-3.5", "GPT-3", "GPT", "Claude", "Bard", "Gemini",
    "LLaMA", "Llama", "Mistral", "Qwen",
)  # fmt: skip
# Also a star sign, a wind, an animal, a poet, a first name: these need an AI word nearby.
DEFAULT_AMBIGUOUS = ("Claude", "Bard", "Gemini", "Llama", "Mistral")

_MADE = r"(?:developed|created|trained|built|made|designed|programmed|fine-tuned|engineered)"
_AI_NOUN = r"(?:AI|artificial\s+intelligence|(?:language\s+)?model|assistant|chatbot|bot|system)"
# "As ..." only opening a sentence: "known as GPT-4" and "such as a model by Google" are not
# self-descriptions.
_AS = r"(?:^|(?<=[\n.!?:]))\s*as\b"


def _names(names: Iterable[str]) -> str:
    """A case-sensitive alternation of proper nouns: "a bard", "to google" are not names.

    Longest first so "GPT-4o" wins over "GPT"; "GPT-4" also matches "GPT4" and "GPT 4".
    """
    flex = (re.escape(n).replace(r"\-", r"[-\s]?").replace(r"\ ", r"\s+") for n in names)
    return "(?-i:" + "|".join(sorted(flex, key=len, reverse=True)) + ")"


@dataclass(frozen=True, kw_only=True)
class IdentityConfig:
    vendor_names: tuple[str, ...] = DEFAULT_VENDORS
    """Companies the assistant must not claim made it, as written (case-sensitive)."""
    model_names: tuple[str, ...] = DEFAULT_MODELS
    """Models the assistant must not claim to be."""
    ambiguous_names: tuple[str, ...] = DEFAULT_AMBIGUOUS
    """Model names that are also ordinary words: a claim counts only near an AI word."""


class IdentityFilter:
    """An assistant turn claiming to be, or to be made by, another vendor's model.

    Only self-identity claims count ("I am ChatGPT", "I'm a language model trained by Google",
    "As GPT-4, I"), not mentions ("search it on Google"); and none counts when a user or system
    turn names that model or vendor itself (the user asked about it, or cast the assistant).
    """

    name = "identity"

    def __init__(self, config: IdentityConfig | None = None) -> None:
        self.config = cfg = config or IdentityConfig()
        vendors, models = _names(cfg.vendor_names), _names(cfg.model_names)
        lead = rf"(?:\bI\s+am|\bI'm|\bI\s+was|\bI've\s+been|\bI\s+have\s+been|{_AS})"
        creator = (  # "I'm an AI language model developed by OpenAI", "I was trained by Meta"
            rf"{lead}(?:\s+(?:originally|initially|also|actually))?(?:\s+(?:an?\s+|the\s+)?"
            rf"(?:[\w-]+\s+){{0,3}}?{_AI_NOUN}|\s+{models})?,?\s+(?:(?:that|which|who)\s+(?:was|is)"
            rf"\s+)?(?:originally\s+)?{_MADE}\s+by\s+(?:the\s+)?(?:(?:team|researchers|engineers)"
            rf"\s+(?:at|of)\s+)?(?P<vendor>{vendors})\b"
            rf"|\bmy\s+(?:creators?|developers?|makers?)\s+(?:at|(?:is|are|was|were)(?:\s+the)?)"
            rf"\s+(?:(?:team|researchers|engineers)\s+at\s+)?(?P<vendor2>{vendors})\b"
        )
        claim = (  # "I am ChatGPT", "As GPT-4, I", "私はChatGPTです"
            rf"(?:(?:\bI\s+am|\bI'm|\bmy\s+name\s+is|\bI(?:'m|\s+am)\s+called|\bcall\s+me|{_AS})"
            rf"\s+|私は)(?:(?:an?|the)\s+)?(?:(?:version|instance|variant)\s+of\s+)?(?P<model>{models})"
            r"(?![A-Za-z0-9])"
        )
        self._creator = re.compile(creator, re.IGNORECASE | re.MULTILINE)
        self._claim = re.compile(claim, re.IGNORECASE | re.MULTILINE)
        self._ambiguous = re.compile(rf"^{_names(cfg.ambiguous_names)}$")
        self._ai_nearby = re.compile(
            rf"\b(?:AI|artificial\s+intelligence|language\s+model|assistant|chatbot|{vendors})\b",
            re.IGNORECASE,
        )

    def check(self, conv: Sequence[Turn]) -> str | None:
        prompt = _prompt(conv)
        for answer in _answers(conv):
            text = answer.translate(_APOSTROPHES)
            for m in self._creator.finditer(text):
                if not _mentions(prompt, m["vendor"] or m["vendor2"]):
                    return self.name
            for m in self._claim.finditer(text):
                name = m["model"]
                if self._ambiguous.match(name) and not self._ai_nearby.search(
                    text, m.end(), m.end() + 100
                ):
                    continue
                if not _mentions(prompt, name):
                    return self.name
        return None


def _mentions(prompt: str, name: str) -> bool:
    """Whether the prompt names `name` (any case; "gpt 4" names "GPT-4")."""
    flex = re.escape(name).replace(r"\-", r"[-\s]?").replace(r"\ ", r"\s+")
    return re.search(rf"(?<![A-Za-z0-9]){flex}(?![A-Za-z0-9])", prompt, re.IGNORECASE) is not None


# ----------------------------------------------------------------------------- config


class SyntheticFilterConfig(BaseModel):
    """The `filter-synthetic` knobs a recipe sets (the `filter_synthetic:` YAML section)."""

    model_config = ConfigDict(extra="forbid")

    enabled: list[Reason] = Field(
        default=list(REASONS),
        description="Reason codes of the filters to run; they run in the order of REASONS.",
    )
    min_answer_chars: int = Field(
        default=0,
        ge=0,
        description="Drop answers with fewer non-space characters as short_answer; 0 disables. "
        'Keep it low: "4" is a right answer to 2+2.',
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


def default_filters(cfg: SyntheticFilterConfig | None = None) -> list[ConversationFilter]:
    """The filters `cfg` enables, in the order of REASONS."""
    cfg = cfg or SyntheticFilterConfig()
    available: dict[str, ConversationFilter] = {
        "malformed_turns": MalformedTurnsFilter(
            MalformedTurnsConfig(require_final_assistant=cfg.require_final_assistant)
        ),
        "empty_answer": EmptyAnswerFilter(),
        "short_answer": ShortAnswerFilter(ShortAnswerConfig(min_answer_chars=cfg.min_answer_chars)),
        "identity": IdentityFilter(
            IdentityConfig(vendor_names=tuple(cfg.vendor_names), model_names=tuple(cfg.model_names))
        ),
        "refusal": RefusalFilter(RefusalConfig(window_chars=cfg.refusal_window_chars)),
    }
    if cfg.min_answer_chars == 0:
        del available["short_answer"]
    return [f for reason, f in available.items() if reason in cfg.enabled]


def first_failure(conv: Sequence[Turn], filters: Iterable[ConversationFilter]) -> str | None:
    """The first filter's reason code for dropping `conv`, or None to keep it."""
    conv = list(conv)  # Ray Data may hand over an array of turns; filters expect a list
    for f in filters:
        if (reason := f.check(conv)) is not None:
            return reason
    return None
