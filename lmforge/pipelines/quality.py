"""Quality filters after datatrove: Gopher repetition, Gopher quality, C4, FineWeb.

Each `Filter` decides as datatrove 0.10.1 does on English (its defaults, each commented
with its file in src/datatrove/pipeline/filters/), with `words.words` for datatrove's
spaCy tokens. A reason is `<filter name>/<datatrove's reason>`, e.g. `gopher_rep/top_2_gram`
(all in `reasons`). The row's `lang` picks the language; without one, the script decides.

For ja, zh and th (`writing_systems.SEGMENTED`: words are script runs) the rules that assume
spaces adapt: Gopher skips the mean word length and finds stop words inside the text; C4
counts words as script runs and also ends lines at `。！？．」』`; FineWeb measures short
lines in display columns (a CJK character is two, as on a terminal, so 30 columns hold
about as much text in either script). A rule without data for a language (no stop words)
is skipped and counted in `stats`, which also counts C4's removed lines by cause, as
datatrove's `stat_update` does, in the process that ran the filter.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any, Literal

from lmforge.pipelines.steps import Filter
from lmforge.pipelines.stop_words import stop_word_count
from lmforge.pipelines.words import TERMINAL_PUNCTUATION, count_sentences, sentences, words
from lmforge.pipelines.writing_systems import SEGMENTED, resolve_lang

# datatrove's PUNCTUATION (src/datatrove/utils/text.py): with TERMINAL_PUNCTUATION, the
# characters a token may consist of and still not count as a word
_PUNCTUATION = (
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, [*range(0, 9), *range(11, 32), *range(127, 160)]))
)
PUNCTUATION_SET = frozenset(_PUNCTUATION) | TERMINAL_PUNCTUATION


@lru_cache(maxsize=1 << 16)
def is_symbol(token: str) -> bool:
    """True when every character is punctuation (datatrove's test for a non-word token)."""
    return all(c in PUNCTUATION_SET for c in token)


@lru_cache(maxsize=1 << 16)
def has_letter(token: str) -> bool:
    return any(c.isalpha() for c in token)


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """(items equal to an earlier one, their characters): gopher_repetition_filter.py."""
    seen: set[str] = set()
    n_dup = dup_chars = 0
    for item in items:
        if item in seen:
            n_dup, dup_chars = n_dup + 1, dup_chars + len(item)
        seen.add(item)
    return n_dup, dup_chars


def ngrams(tokens: list[str], ns: Iterable[int], sep: str) -> Iterator[tuple[int, list[str]]]:
    """(n, [sep.join(tokens[i : i + n]) for every i]) for each n, sliced out of one string."""
    joined, k = sep.join(tokens), len(sep)
    starts = [end + i * k for i, end in enumerate(accumulate(map(len, tokens), initial=0))]
    for n in ns:  # a gram ends where the token after it starts, less one separator
        yield n, [joined[a : b - k] for a, b in zip(starts, starts[n:], strict=False)]


def duplicated_ngram_chars(grams: list[str], n: int) -> int:
    """Characters of n-grams seen before, jumping n positions past each repeat (datatrove's
    `find_all_duplicate`)."""
    if len(set(grams)) == len(grams):
        return 0
    seen: set[str] = set()
    chars = i = 0
    while i < len(grams):
        if grams[i] in seen:
            chars += len(grams[i])
            i += n
        else:
            seen.add(grams[i])
            i += 1
    return chars


def alpha_ratio(text: str, tokens: list[str], lang: str | None, how: str) -> float:
    """Share of words with a letter: over `tokens` (datatrove), or over whitespace-separated
    words that are not punctuation alone ("whitespace"; `tokens` less symbols for ja/zh/th,
    which put no spaces between words). 1.0 when there is no word."""
    if how == "datatrove":
        counted = tokens
    else:
        counted = [w for w in (tokens if lang in SEGMENTED else text.split()) if not is_symbol(w)]
    return sum(map(has_letter, counted)) / len(counted) if counted else 1.0


class QualityFilter(Filter):
    """A `Filter` with a config, a `stats` counter and reasons prefixed by its name."""

    reasons: tuple[str, ...] = ()

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.stats: Counter[str] = Counter()

    def drop(self, code: str) -> tuple[bool, str]:
        return False, f"{self.name}/{code}"

    def skip(self, rule: str, lang: str) -> None:
        self.stats[f"skipped/{rule}:{lang}"] += 1


# --- Gopher repetition ---------------------------------------------------------------------
@dataclass(kw_only=True)
class GopherRepetitionConfig:
    """Gopher's repetition limits (Rae et al. 2021, table A1); None turns a rule off.

    dup_line_frac: most lines equal to an earlier line, as a fraction of the lines.
    dup_para_frac: the same for paragraphs (text between blank lines).
    dup_line_char_frac: characters of those lines / characters of the document.
    dup_para_char_frac: characters of those paragraphs / characters of the document.
    top_n_grams: (n, limit): characters of the most frequent word n-gram x its count / chars.
    dup_n_grams: (n, limit): characters of word n-grams seen before / characters.
    """

    dup_line_frac: float | None = 0.3  # gopher_repetition_filter.py
    dup_para_frac: float | None = 0.3  # gopher_repetition_filter.py
    dup_line_char_frac: float | None = 0.2  # gopher_repetition_filter.py
    dup_para_char_frac: float | None = 0.2  # gopher_repetition_filter.py
    # both: gopher_repetition_filter.py
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = (
        (5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10),
    )  # fmt: skip


class GopherRepetitionFilter(QualityFilter):
    name = "gopher_rep"
    reasons = (
        "empty", "dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac",
        *(f"top_{n}_gram" for n in (2, 3, 4)), *(f"duplicated_{n}_n_grams" for n in range(5, 11)),
    )  # fmt: skip
    _PARAGRAPH = re.compile(r"\n{2,}")
    _LINES = re.compile("\n+")

    def __init__(self, cfg: GopherRepetitionConfig | None = None) -> None:
        super().__init__(cfg or GopherRepetitionConfig())

    def filter(self, row: dict[str, Any]) -> bool | tuple[bool, str]:
        text, cfg = row["text"], self.cfg
        if not text:
            return self.drop("empty")
        paragraphs = self._PARAGRAPH.split(text.strip())
        n_dup, dup_chars = find_duplicates(paragraphs)
        if cfg.dup_para_frac and n_dup / len(paragraphs) > cfg.dup_para_frac:
            return self.drop("dup_para_frac")
        if cfg.dup_para_char_frac and dup_chars / len(text) > cfg.dup_para_char_frac:
            return self.drop("dup_para_char_frac")
        lines = self._LINES.split(text)
        n_dup, dup_chars = find_duplicates(lines)
        if cfg.dup_line_frac and n_dup / len(lines) > cfg.dup_line_frac:
            return self.drop("dup_line_frac")
        if cfg.dup_line_char_frac and dup_chars / len(text) > cfg.dup_line_char_frac:
            return self.drop("dup_line_char_frac")
        tokens = words(text, row.get("lang"))
        top = dict(cfg.top_n_grams)  # n -> limit; n-grams joined by spaces, as datatrove
        for n, grams in ngrams(tokens, top, " "):
            gram, count = Counter(grams).most_common(1)[0] if grams else ("", 0)
            if len(gram) * count / len(text) > top[n]:  # the most frequent gram's characters
                return self.drop(f"top_{n}_gram")
        dup = dict(cfg.dup_n_grams)  # joined without spaces, as datatrove
        for n, grams in ngrams(tokens, dup, ""):
            if duplicated_ngram_chars(grams, n) / len(text) > dup[n]:
                return self.drop(f"duplicated_{n}_n_grams")
        return True


# --- Gopher quality ------------------------------------------------------------------------
@dataclass(kw_only=True)
class GopherQualityConfig:
    """Gopher's quality rules (Rae et al. 2021); None turns a rule off. Words are tokens
    with a character that is not punctuation; "per token" counts punctuation too.

    min_doc_words, max_doc_words: the range of the word count; min_avg_word_length,
        max_avg_word_length: the range of the mean word length in characters.
    max_symbol_word_ratio: most `#`, and most `...` or `…`, per token.
    max_bullet_lines_ratio, max_ellipsis_lines_ratio: most lines starting with `•`/`-`,
        and ending in `...`/`…`, as fractions of the lines.
    max_non_alpha_words_ratio: the LEAST share of tokens with a letter (datatrove's name).
    min_stop_words: fewest distinct stop words from `stop_words` (None: STOP_WORDS).
    alpha_words: what `max_non_alpha_words_ratio` counts over: "whitespace" (the Gopher
        paper's "80% of words": whitespace-separated words, punctuation-only ones left out;
        script runs for ja/zh/th) or "datatrove" (every token, punctuation too, as datatrove).
    """

    min_doc_words: int | None = 50  # gopher_quality_filter.py
    max_doc_words: int | None = 100000  # gopher_quality_filter.py
    min_avg_word_length: int | None = 3  # gopher_quality_filter.py
    max_avg_word_length: int | None = 10  # gopher_quality_filter.py
    max_symbol_word_ratio: float | None = 0.1  # gopher_quality_filter.py
    max_bullet_lines_ratio: float | None = 0.9  # gopher_quality_filter.py
    max_ellipsis_lines_ratio: float | None = 0.3  # gopher_quality_filter.py
    max_non_alpha_words_ratio: float | None = 0.8  # gopher_quality_filter.py
    min_stop_words: int | None = 2  # gopher_quality_filter.py
    stop_words: dict[str, frozenset[str]] | None = None
    alpha_words: Literal["whitespace", "datatrove"] = "datatrove"


class GopherQualityFilter(QualityFilter):
    name = "gopher_quality"
    reasons = tuple(f"gopher_{r}" for r in (
        "short_doc", "long_doc", "below_avg_threshold", "above_avg_threshold", "too_many_hashes",
        "too_many_ellipsis", "too_many_bullets", "too_many_end_ellipsis", "below_alpha_threshold",
        "enough_stop_words"))  # fmt: skip

    def __init__(self, cfg: GopherQualityConfig | None = None) -> None:
        super().__init__(cfg or GopherQualityConfig())

    def filter(self, row: dict[str, Any]) -> bool | tuple[bool, str]:
        text, cfg = row["text"], self.cfg
        lang = resolve_lang(text, row.get("lang"))
        tokens = words(text, lang)
        n_tokens = len(tokens)
        word_lens = [len(w) for w in tokens if not is_symbol(w)]
        n_words = len(word_lens)
        if cfg.min_doc_words and n_words < cfg.min_doc_words:
            return self.drop("gopher_short_doc")
        if cfg.max_doc_words and n_words > cfg.max_doc_words:
            return self.drop("gopher_long_doc")
        if lang in SEGMENTED:
            self.skip("avg_word_length", lang)
        elif n_words:
            avg = sum(word_lens) / n_words
            if cfg.min_avg_word_length and avg < cfg.min_avg_word_length:
                return self.drop("gopher_below_avg_threshold")
            if cfg.max_avg_word_length and avg > cfg.max_avg_word_length:
                return self.drop("gopher_above_avg_threshold")
        if not n_tokens:  # only reachable with min_doc_words off
            return True
        ratio = cfg.max_symbol_word_ratio
        if ratio and text.count("#") / n_tokens > ratio:
            return self.drop("gopher_too_many_hashes")
        if ratio and (text.count("...") + text.count("…")) / n_tokens > ratio:
            return self.drop("gopher_too_many_ellipsis")
        lines = text.splitlines()
        bullets = sum(s.lstrip().startswith(("•", "-")) for s in lines)
        if cfg.max_bullet_lines_ratio and bullets / len(lines) > cfg.max_bullet_lines_ratio:
            return self.drop("gopher_too_many_bullets")
        ellipses = sum(s.rstrip().endswith(("...", "…")) for s in lines)
        if cfg.max_ellipsis_lines_ratio and ellipses / len(lines) > cfg.max_ellipsis_lines_ratio:
            return self.drop("gopher_too_many_end_ellipsis")
        if cfg.max_non_alpha_words_ratio and alpha_ratio(text, tokens, lang, cfg.alpha_words) < (
            cfg.max_non_alpha_words_ratio
        ):
            return self.drop("gopher_below_alpha_threshold")
        if cfg.min_stop_words:
            found = stop_word_count(text, tokens, lang, cfg.stop_words)
            if found is None:
                self.skip("stop_words", lang)
            elif found < cfg.min_stop_words:
                return self.drop("gopher_enough_stop_words")
        return True


# --- C4 ------------------------------------------------------------------------------------
CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")  # c4_filters.py
END_PUNCTUATION = (".", "?", "!", '"', "'")  # c4_filters.py
CJK_END_PUNCTUATION = ("。", "！", "？", "．", "」", "』")
POLICY_SUBSTRINGS: tuple[str, ...] = ("terms of use", "privacy policy", "cookie policy")
POLICY_SUBSTRINGS += ("uses cookies", "use of cookies", "use cookies")  # c4_filters.py


@dataclass(kw_only=True)
class C4QualityConfig:
    """C4's rules (Raffel et al. 2020): the kept lines REPLACE the row's text. No bad-words
    rule: datatrove downloads that list (LDNOOBW) in C4BadWordsFilter; none is offline here.

    split_paragraph: judge lines (True, as C4) or sentences (False).
    remove_citations: delete `[1]`, `[edit]`, `[citation needed]`.
    filter_no_terminal_punct: drop lines not ending in END_PUNCTUATION (CJK: also
        CJK_END_PUNCTUATION) or ending in `...`. FineWeb ran with False.
    min_num_sentences: drop the page with fewer sentences in its kept lines (-1: off).
    min_words_per_line: drop lines with fewer words (-1: off): split on spaces (CJK:
        script runs that are not punctuation).
    max_word_length: drop lines with a longer word (-1: off).
    filter_lorem_ipsum, filter_curly_bracket: drop the page for "lorem ipsum" or `{`.
    filter_javascript, filter_policy: drop lines with "javascript", or POLICY_SUBSTRINGS.
    """

    split_paragraph: bool = True  # c4_filters.py
    remove_citations: bool = True  # c4_filters.py
    filter_no_terminal_punct: bool = True  # c4_filters.py
    min_num_sentences: int = 5  # c4_filters.py
    min_words_per_line: int = 3  # c4_filters.py
    max_word_length: int = 1000  # c4_filters.py
    filter_lorem_ipsum: bool = True  # c4_filters.py
    filter_javascript: bool = True  # c4_filters.py
    filter_curly_bracket: bool = True  # c4_filters.py
    filter_policy: bool = True  # c4_filters.py


class C4QualityFilter(QualityFilter):
    name = "c4_quality"
    reasons = ("lorem_ipsum", "curly_bracket", "too_few_sentences")

    def __init__(self, cfg: C4QualityConfig | None = None) -> None:
        super().__init__(cfg or C4QualityConfig())

    def filter(self, row: dict[str, Any]) -> bool | tuple[bool, str]:
        text, cfg = row["text"], self.cfg
        lang = resolve_lang(text, row.get("lang"))
        seg = lang in SEGMENTED
        ends = END_PUNCTUATION + CJK_END_PUNCTUATION if seg else END_PUNCTUATION
        lines = text.splitlines() if cfg.split_paragraph else sentences(text, lang)
        n_sentences, kept = 0, []
        for line in lines:
            line = line.strip()
            # C4 splits on spaces; script runs that are not punctuation stand in for CJK
            line_words = [w for w in words(line, lang) if not is_symbol(w)] if seg else line.split()
            self.stats["line-total"] += 1
            if cfg.max_word_length != -1 and any(len(w) > cfg.max_word_length for w in line_words):
                self.stats["line-filter-too_long_word"] += 1
                continue
            if cfg.remove_citations:
                line = CITATION_RE.sub("", line)
            if cfg.filter_no_terminal_punct and (not line.endswith(ends) or line.endswith("...")):
                self.stats["line-filter-no_terminal_punc"] += 1
                continue
            if len(line_words) < cfg.min_words_per_line:
                self.stats["line-filter-too_few_words"] += 1
                continue
            lower = line.lower()
            if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
                return self.drop("lorem_ipsum")
            if cfg.filter_javascript and "javascript" in lower:
                self.stats["line-filter-javascript"] += 1
                continue
            if cfg.filter_curly_bracket and "{" in line:
                return self.drop("curly_bracket")
            if cfg.filter_policy and any(p in lower for p in POLICY_SUBSTRINGS):
                self.stats["line-filter-policy"] += 1
                continue
            if cfg.min_num_sentences != -1:
                n_sentences += count_sentences(line, lang) if cfg.split_paragraph else 1
            kept.append(line)
            self.stats["line-kept"] += 1
        if n_sentences < cfg.min_num_sentences:
            return self.drop("too_few_sentences")
        row["text"] = ("\n" if cfg.split_paragraph else " ").join(kept).strip()
        return True


# --- FineWeb -------------------------------------------------------------------------------
@dataclass(kw_only=True)
class FineWebQualityConfig:
    """FineWeb's rules (Penedo et al. 2024), over the non-blank lines.

    line_punct_thr: drop when fewer lines than this fraction end in `stop_chars`
        (TERMINAL_PUNCTUATION, with `。！？`); line_punct_exclude_zero: unless none does.
    short_line_thr: drop when more lines than this fraction are short: at most
        `short_line_length` display columns (East Asian wide characters take two).
    char_duplicates_ratio: most characters in lines equal to an earlier line / characters.
    new_line_ratio: most newlines per token (a list, not prose).
    """

    line_punct_thr: float = 0.12  # fineweb_quality_filter.py
    line_punct_exclude_zero: bool = False  # fineweb_quality_filter.py
    stop_chars: frozenset[str] = TERMINAL_PUNCTUATION  # fineweb_quality_filter.py
    short_line_thr: float = 0.67  # fineweb_quality_filter.py
    short_line_length: int = 30  # fineweb_quality_filter.py
    char_duplicates_ratio: float = 0.01  # fineweb_quality_filter.py
    new_line_ratio: float = 0.3  # fineweb_quality_filter.py


def display_width(line: str) -> int:
    """Terminal columns: East Asian wide (W) and full-width (F) characters take two."""
    if line.isascii():
        return len(line)
    return len(line) + sum(unicodedata.east_asian_width(c) in "WF" for c in line)


class FineWebQualityFilter(QualityFilter):
    name = "fineweb_quality"
    reasons = ("empty", "line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio")

    def __init__(self, cfg: FineWebQualityConfig | None = None) -> None:
        super().__init__(cfg or FineWebQualityConfig())

    def filter(self, row: dict[str, Any]) -> bool | tuple[bool, str]:
        text, cfg = row["text"], self.cfg
        lines = [line for line in text.split("\n") if line.strip() != ""]
        if not lines:
            return self.drop("empty")
        ratio = sum(line[-1] in cfg.stop_chars for line in lines) / len(lines)
        if ratio < cfg.line_punct_thr and not (ratio == 0 and cfg.line_punct_exclude_zero):
            return self.drop("line_punct_ratio")
        short = sum(display_width(line) <= cfg.short_line_length for line in lines)
        if short / len(lines) > cfg.short_line_thr:
            return self.drop("short_line_ratio")
        if find_duplicates(lines)[1] / len(text.replace("\n", "")) > cfg.char_duplicates_ratio:
            return self.drop("char_dup_ratio")
        if text.count("\n") / len(words(text, row.get("lang"))) > cfg.new_line_ratio:
            return self.drop("list_ratio")
        return True


def default_quality_filters() -> list[QualityFilter]:
    """FineWeb's chain: Gopher repetition and quality, C4 (no end-punctuation rule), FineWeb."""
    return [
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(C4QualityConfig(filter_no_terminal_punct=False)),
        FineWebQualityFilter(),
    ]
