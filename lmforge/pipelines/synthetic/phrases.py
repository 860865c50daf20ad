"""Phrase filters: refusals, AI disclaimers and other vendors' identity claims.

Both are regular-expression families, English and Japanese, with the context checks that
keep them from over-filtering role-play and questions about AI: position in the answer
(a refusal that *is* the answer versus a passing mention), quoted speech (a character
talking), and the prompt (a user who asks about ChatGPT, a prompt that casts the assistant
as an AI).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lmforge.pipelines.synthetic.base import ConversationFilter, Finding, clip
from lmforge.pipelines.synthetic.formats import Turn, answers, prompt_text

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
# The vendor boilerplate among them: an AI character in a story does not call itself a
# "language model", so these count even when the prompt casts the assistant as an AI
# (unless the prompt itself says "language model").
_LM_DISCLAIMER = _any_of(
    r"\bas\s+an?\s+(?:large\s+)?(?:AI\s+)?language\s+model\b",
    r"\bI(?:'m|\s+am)\s+(?:just\s+|only\s+|merely\s+|simply\s+)?an?\s+(?:large\s+)?(?:AI\s+)?"
    r"language\s+model\b",
    r"AI言語モデルとして|私は(?:AI)?言語モデル",
)
_SAYS_LANGUAGE_MODEL = re.compile(r"language\s+model|言語モデル", re.IGNORECASE)
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


class RefusalFilter(ConversationFilter):
    """An assistant turn that is a refusal or an AI disclaimer (English and basic Japanese).

    Refusal phrases count in an answer's opening `window_chars`, or when the sentences holding
    them are most of the answer: deep in a long helpful answer (a story where a character
    apologises) they are a passing mention. AI disclaimers and training-cutoff remarks count
    anywhere; disclaimers, where the prompt cast the assistant as an AI, only in their
    "language model" form (unless the prompt says that too). Quoted speech never counts:
    it is a character talking.
    """

    name = "refusal"

    def __init__(self, config: RefusalConfig | None = None) -> None:
        self.config = config or RefusalConfig()

    def inspect(self, conv: Sequence[Turn]) -> Finding | None:
        anywhere = [("cutoff", _CUTOFF)]
        prompt = prompt_text(conv)
        if not _CASTS_AS_AI.search(prompt):
            anywhere.append(("disclaimer", _AI_DISCLAIMER))
        elif not _SAYS_LANGUAGE_MODEL.search(prompt):
            anywhere.append(("disclaimer", _LM_DISCLAIMER))
        for answer in answers(conv):
            text = answer.translate(_APOSTROPHES)
            for kind, pattern in anywhere:
                if (m := self._found(pattern, text)) is not None:
                    return Finding(f"{self.name}/{kind}", clip(text, m.start(), m.end() + 80))
            if (m := self._refusal(text)) is not None:
                return Finding(self.name, clip(text, m.start(), m.end() + 80))
        return None

    @staticmethod
    def _found(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
        return next((m for m in pattern.finditer(text) if not _quoted(text, m.start())), None)

    def _refusal(self, text: str) -> re.Match[str] | None:
        """The refusal phrase that makes `text` a refusal, or None."""
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        sentences = set()  # (start, end) spans of the sentences holding a refusal phrase
        first = None
        for m in _REFUSAL.finditer(text):
            if _quoted(text, m.start()):
                continue
            if m.start() < self.config.window_chars:
                return m
            first = first or m
            i = bisect.bisect_right(ends, m.start())
            sentences.add((ends[i - 1] if i else 0, ends[i] if i < len(ends) else len(text)))
        covered = sum(end - start for start, end in sentences)
        return first if sentences and covered >= self.config.mostly_fraction * len(text) else None


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


class IdentityFilter(ConversationFilter):
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
            # "私はOpenAIによって開発されたChatGPTです": the name later in a self-description
            rf"|私(?:は|の名前は)[^。！？\n]{{0,40}}?(?P<model_ja>{models})(?![A-Za-z0-9])"
            r"(?:\s*(?:です|だ|と申します|と呼ばれ|という))"
        )
        # "私はGoogleが開発したAIです", "私はOpenAIによって訓練されました"
        creator += (
            rf"|私(?:は|を)[^。！？\n]{{0,30}}?(?P<vendor3>{vendors})\s*(?:社)?\s*(?:によって|が|の)"
            r"\s*(?:開発|作成|訓練|トレーニング|構築|設計|製作)"
        )
        self._creator = re.compile(creator, re.IGNORECASE | re.MULTILINE)
        self._claim = re.compile(claim, re.IGNORECASE | re.MULTILINE)
        self._ambiguous = re.compile(rf"^{_names(cfg.ambiguous_names)}$")
        self._ai_nearby = re.compile(
            rf"\b(?:AI|artificial\s+intelligence|language\s+model|assistant|chatbot|{vendors})\b",
            re.IGNORECASE,
        )

    def inspect(self, conv: Sequence[Turn]) -> Finding | None:
        prompt = prompt_text(conv)
        for answer in answers(conv):
            text = answer.translate(_APOSTROPHES)
            for m in self._creator.finditer(text):
                if not _mentions(prompt, m["vendor"] or m["vendor2"] or m["vendor3"]):
                    return Finding(self.name, clip(text, m.start(), m.end() + 40))
            for m in self._claim.finditer(text):
                name = m["model"] or m["model_ja"]
                if self._ambiguous.match(name) and not self._ai_nearby.search(
                    text, m.end(), m.end() + 100
                ):
                    continue
                if not _mentions(prompt, name):
                    return Finding(self.name, clip(text, m.start(), m.end() + 40))
        return None


def _mentions(prompt: str, name: str) -> bool:
    """Whether the prompt names `name` (any case; "gpt 4" names "GPT-4")."""
    flex = re.escape(name).replace(r"\-", r"[-\s]?").replace(r"\ ", r"\s+")
    return re.search(rf"(?<![A-Za-z0-9]){flex}(?![A-Za-z0-9])", prompt, re.IGNORECASE) is not None
