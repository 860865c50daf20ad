"""Shape filters: turn order, empty / short / long answers, truncation, repetition loops.

None of them reads meaning; each looks at how an answer is built and where it stops. They
are tuned on real GPT-4 output (GPTeacher role-play, 0 of 1,923 records dropped by them) and
on planted defects (`benchmarks/synthetic_filter_eval.py`).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from lmforge.pipelines.synthetic.base import ConversationFilter, Finding, clip
from lmforge.pipelines.synthetic.code import code_cut, code_tail
from lmforge.pipelines.synthetic.formats import Turn, answers
from lmforge.pipelines.writing_systems import cjk_share


@dataclass(frozen=True, kw_only=True)
class MalformedTurnsConfig:
    require_final_assistant: bool = False
    """Also drop conversations ending on an unanswered user turn (truncated ShareGPT)."""


class MalformedTurnsFilter(ConversationFilter):
    """No assistant turn, not opened by the user, a role speaking twice, or an empty prompt."""

    name = "malformed_turns"

    def __init__(self, config: MalformedTurnsConfig | None = None) -> None:
        self.config = config or MalformedTurnsConfig()

    def inspect(self, conv: Sequence[Turn]) -> Finding | None:
        # A system prompt is only meaningful before the dialogue starts.
        body = conv[1:] if len(conv) > 0 and conv[0]["role"] == "system" else conv
        roles = [t["role"] for t in body]
        order = " ".join(roles)
        if "assistant" not in roles or roles[0] != "user" or "system" in roles:
            return Finding(self.name, f"turns: {order}")
        if any(a == b for a, b in pairwise(roles)):
            return Finding(self.name, f"turns: {order}")
        if any(t["role"] == "user" and not t["content"] for t in body):
            return Finding(self.name, "an empty user turn")
        if self.config.require_final_assistant and roles[-1] != "assistant":
            return Finding(self.name, "ends on an unanswered user turn")
        return None


class EmptyAnswerFilter(ConversationFilter):
    """An assistant turn with no visible character."""

    name = "empty_answer"

    def inspect(self, conv: Sequence[Turn]) -> Finding | None:
        return Finding(self.name) if any(not a.strip() for a in answers(conv)) else None


@dataclass(frozen=True, kw_only=True)
class AnswerLengthConfig:
    min_answer_chars: int = 0
    """Fewest non-space characters an answer may have; 0 disables ("4" answers 2+2)."""
    max_answer_chars: int = 24_000
    """Most characters an answer may have (about 6,000 tokens: longer than GPT-4's 8k-context
    answers usually run); 0 disables."""


class AnswerLengthFilter(ConversationFilter):
    """A non-empty answer shorter than `min_answer_chars` or longer than `max_answer_chars`."""

    name = "length"

    def __init__(self, config: AnswerLengthConfig | None = None) -> None:
        self.config = config or AnswerLengthConfig()

    def inspect(self, conv: Sequence[Turn]) -> Finding | None:
        cfg = self.config
        for a in answers(conv):
            n = len(a.strip())
            if 0 < n < cfg.min_answer_chars:
                return Finding("short_answer", f"{n} characters: {clip(a)}")
            if cfg.max_answer_chars and n > cfg.max_answer_chars:
                return Finding("long_answer", f"{n:,} characters")
        return None


# ----------------------------------------------------------------------------- truncation

# An answer may end on these: sentence ends, closing quotes and brackets, markdown emphasis
# and code, an ellipsis, a closing brace. A colon or a comma is not an end.
_TERMINAL = set(".!?。！？…」』】）)]}\"'”’*`~>|")
# A line that ends on one of these words stops mid-phrase, however short it is.
_DANGLING = frozenset(re.findall(r"\w+", """
    a an the and or but nor so yet to of in on at by for from with into onto about as than
    that which who whom whose because if when while although though since unless until
    is are was were be been being has have had do does did will would shall should can
    could may might must my your his her its our their this these those very
"""))  # fmt: skip
_JA_DANGLING = tuple("はがをにでとのもへやか、")
_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)
_NUMBERED = re.compile(r"^\s*(\d{1,2})[.)]\s+", re.MULTILINE)
_BARE_ITEM = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s*(?:\S+(?:\s+\S+)?)?\s*$")
_COUNT_WORDS = {w: i for i, w in enumerate(re.findall(
    r"\w+", "zero one two three four five six seven eight nine ten eleven twelve"
))}  # fmt: skip
_ANNOUNCED = re.compile(
    r"\b(\d{1,2}|three|four|five|six|seven|eight|nine|ten|eleven|twelve)\s+(?:[\w-]+\s+){0,3}?"
    r"(?:tips|ways|steps|reasons|ideas|examples|things|points|items|questions|facts"
    r"|strategies|methods|benefits|suggestions|options|rules|signs|factors|key\s+\w+|stages"
    r"|principles|recommendations|techniques|exercises|mistakes|lessons)\b",
    re.IGNORECASE,
)
_HEADING = re.compile(r"^\s*(?:#{1,6}\s|\|)")
# A letter's closing, "Yours sincerely,\nJane" or "Forever yours, Romeo": a name, no period.
_SIGN_OFF = re.compile(
    r"(?:^|(?<=[\s.!?]))(?:\S+\s+){0,3}?(?:yours|sincerely|regards|wishes|respectfully|cordially"
    r"|faithfully|cheers|love|affectionately|gratefully|warmly|thanks|thank\s+you|signed"
    r"|with\s+(?:\w+\s+)?(?:love|respect|gratitude|warm|best|kind|hope|regards|appreciation"
    r"|admiration|affection|sincer\w*|hono\w+|devotion|anticipation)|until\s+next)"
    r"\b[^,\n.!?]{0,40},\s*(?P<name>[^\n]*)$"
    r"|(?:^|\n|(?<=[.!?]))\s*[-–—~]\s*(?P<dash>[^\n]*)$",
    re.IGNORECASE,
)
_PUNCT = ".,;:!?\"'“”‘’()[]…-—*"
_SENTENCE_END = re.compile(r"[.!?。！？…]")


@dataclass(frozen=True, kw_only=True)
class TruncationConfig:
    min_line_words: int = 6
    """An unpunctuated final line counts as cut off when it has at least this many words
    (a signature, "John Smith", or a label does not), or ends on a function word."""
    min_cjk_line_chars: int = 12
    """The same for Chinese/Japanese text, counted in characters."""
    token_limits: tuple[int, ...] = (256, 500, 512, 1000, 1024, 1500, 2000, 2048, 4000, 4096, 8192)
    """Answer lengths (tokens) where generation is often cut by a `max_tokens` setting."""
    token_tolerance: float = 0.08
    """How close (relative) the estimated length must be to a limit."""
    chars_per_token: float = 4.0
    """Estimate of GPT tokenizers' characters per token for English (1 for CJK)."""


class TruncationFilter(ConversationFilter):
    """An answer cut off: an unclosed code fence, bare code stopping mid-way (`code.py`), a
    numbered list stopping early, a final sentence with no end, or an unpunctuated end at
    a round token count."""

    name = "truncated"

    def __init__(self, config: TruncationConfig | None = None) -> None:
        self.config = config or TruncationConfig()

    def inspect(self, conv: Sequence[Turn]) -> Finding | None:
        for answer in answers(conv):
            if answer and (kind := self.kind(answer)) is not None:
                return Finding(f"{self.name}/{kind}", clip(answer, max(0, len(answer) - 120)))
        return None

    def kind(self, text: str) -> str | None:
        """ "code_fence", "list", "mid_sentence", "token_limit", a `code.code_cut` kind
        ("code_brackets", "code_string", "code_statement") for an answer ending in bare
        code, or None for a whole answer."""
        if len(_FENCE.findall(text)) % 2:
            return "code_fence"
        if (code := code_tail(text)) is not None:
            return code_cut(code)  # code is judged as code, never as a prose sentence
        lines = [line for line in text.splitlines() if line.strip()]
        last = lines[-1].strip()
        if self._list_cut(text, last):
            return "list"
        if _ends(last) or _signed(text) or _structured(lines):
            return None
        cjk = cjk_share(last) > 0.3
        if self._mid_sentence(last, cjk, lines):
            return "mid_sentence"
        if self._near_limit(text, cjk):
            return "token_limit"
        return None

    @staticmethod
    def _list_cut(text: str, last: str) -> bool:
        if _NUMBERED.match(last) is None and _BARE_ITEM.match(last) is None:
            return False
        if _BARE_ITEM.match(last) and not _ends(last):
            return True  # "4." or "4. The" alone: the item's text is missing
        numbers = [int(n) for n in _NUMBERED.findall(text)]
        announced = _ANNOUNCED.search(text[:400])
        if not numbers or announced is None:
            return False
        word = announced.group(1).lower()
        count = int(word) if word.isdigit() else _COUNT_WORDS[word]
        # the answer ends inside its list, before the item it announced
        return numbers[-1] == max(numbers) and max(numbers) < count <= 12

    def _mid_sentence(self, last: str, cjk: bool, lines: list[str]) -> bool:
        if _HEADING.match(last):
            return False
        if cjk:
            return last.endswith(_JA_DANGLING) or len(last) >= self.config.min_cjk_line_chars
        words = last.split()
        tail = words[-1].lower().strip("\"'“”‘’*_")
        if last[-1] in ",;:-–—(/&+=" and (last[-1] != "," or len(words) >= 4):
            return True
        if tail in _DANGLING and len(words) >= 2:
            return True
        if not any(c.isalpha() for c in tail) or tail[0] in "#@":
            return False  # "Total: 42", a code, a date, a hashtag
        if _NUMBERED.match(last) and not _SENTENCE_END.search(last) and not _siblings_end(lines):
            return False  # a list whose items carry no periods: "3. Flour and sugar in a bowl"
        if not any(_SENTENCE_END.search(line) for line in lines):
            return False  # no sentence anywhere: a title, a name, a slogan
        return len(words) >= self.config.min_line_words

    def _near_limit(self, text: str, cjk: bool) -> bool:
        cfg = self.config
        tokens = len(text) if cjk else len(text) / cfg.chars_per_token
        return any(abs(tokens - n) <= cfg.token_tolerance * n for n in cfg.token_limits)


def _siblings_end(lines: list[str]) -> bool:
    """Whether the numbered items before the last one end like sentences (most of them)."""
    items = [line for line in lines[:-1] if _NUMBERED.match(line)]
    return bool(items) and sum(_ends(line) for line in items) * 2 > len(items)


def _signed(text: str) -> bool:
    """Whether the answer ends on a letter's closing and signature ("Yours sincerely,
    Dr. Jane Goodall", "With respect, Your AI companion", "- Harry")."""
    tail = text[-120:]
    return any(
        len((m["name"] or m["dash"] or "").split()) <= 5
        for start in range(len(tail))  # leftmost matches may be too long: try each start
        if (m := _SIGN_OFF.match(tail, start)) is not None
    )


def _structured(lines: list[str]) -> bool:
    """Whether the answer ends in a block of unpunctuated lines (an itinerary, a schedule,
    a poem's stanza): its last line is an item of the block, not a cut sentence."""
    tail = lines[-3:]
    return len(tail) == 3 and not any(_ends(line) for line in tail)


def _ends(line: str) -> bool:
    """Whether a line ends like a finished sentence, quote, block or emoji."""
    end = line.rstrip()[-1]
    return end in _TERMINAL or unicodedata.category(end) in ("So", "Sk")


# ----------------------------------------------------------------------------- repetition


@dataclass(frozen=True, kw_only=True)
class RepetitionConfig:
    min_line_chars: int = 20
    """Shorter lines (a heading, "Chorus:", "---") are not counted as repeated lines."""
    max_consecutive: int = 2
    """A line or paragraph repeated more times in a row than this is a loop."""
    max_line_repeats: int = 4
    """A line occurring more often than this in one answer is a loop (a song's chorus
    comes back three or four times)."""
    ngram: int = 10
    """Words per n-gram for the n-gram rule (characters x 3 for CJK text)."""
    max_ngram_repeats: int = 3
    """The most frequent n-gram occurring more often than this ..."""
    max_repeated_fraction: float = 0.3
    """... while repeated n-grams cover more than this share of the answer, is a loop."""
    min_tail_repeats: int = 4
    """An answer ending in one span of words repeated this many times back to back
    ("the good life, the good life, ...") is a loop, however long the answer before it."""


class RepetitionFilter(ConversationFilter):
    """An answer stuck in a loop: a line or paragraph repeated back to back or many times,
    or a span of words coming back again and again (`repetition/line`, `/paragraph`,
    `/ngram`)."""

    name = "repetition"

    def __init__(self, config: RepetitionConfig | None = None) -> None:
        self.config = config or RepetitionConfig()

    def inspect(self, conv: Sequence[Turn]) -> Finding | None:
        for answer in answers(conv):
            if (found := self._loop(answer)) is not None:
                kind, unit = found
                return Finding(f"{self.name}/{kind}", clip(unit))
        return None

    def _loop(self, text: str) -> tuple[str, str] | None:
        cfg = self.config
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
        lines = [" ".join(x.split()) for x in text.splitlines() if x.strip()]
        for kind, units in (("paragraph", paragraphs), ("line", lines)):
            units = [u for u in units if len(u) >= cfg.min_line_chars]
            run = 1
            for a, b in pairwise(units):
                run = run + 1 if a == b else 1
                if run > cfg.max_consecutive:
                    return kind, a
            if units:
                unit, n = Counter(units).most_common(1)[0]
                if n > cfg.max_line_repeats:
                    return kind, unit
        cjk = cjk_share(text) > 0.3
        tokens = [c for c in text if not c.isspace()] if cjk else text.split()
        bare = [t.strip(_PUNCT).lower() for t in tokens]  # "naturally," = "naturally"
        if (cycle := _looping_tail(bare, cfg.min_tail_repeats)) is not None:
            return "tail", ("" if cjk else " ").join(cycle)
        n = cfg.ngram * 3 if cjk else cfg.ngram
        if len(tokens) < 2 * n:
            return None
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        counts = Counter(grams)
        top, times = counts.most_common(1)[0]
        if times <= cfg.max_ngram_repeats:
            return None
        covered = bytearray(len(tokens))
        for i, g in enumerate(grams):
            if counts[g] > 1:
                covered[i : i + n] = b"\x01" * n
        if sum(covered) > cfg.max_repeated_fraction * len(tokens):
            return "ngram", ("" if cjk else " ").join(top)
        return None


def _looping_tail(tokens: list[str], repeats: int, max_unit: int = 40) -> list[str] | None:
    """The unit (1..max_unit tokens) that the end of `tokens` repeats `repeats`+ times in a
    row, covering at least 12 tokens ("Ha! Ha! Ha! Ha!" is laughter) or repeated twice that
    often; None when the end does not loop."""
    n = len(tokens)
    for p in range(1, min(max_unit, n // repeats) + 1):
        run = 0  # tokens at the end equal to the token p before them
        while run < n - p and tokens[n - 1 - run] == tokens[n - 1 - run - p]:
            run += 1
        times = (run + p) // p
        if times >= repeats and (run + p >= 12 or times >= 2 * repeats):
            return tokens[n - p :]
    return None
