"""Quality filters (Gopher repetition and quality, C4, FineWeb) and the script-aware words
they count: each rule on a document that trips it and on a near miss, then the whole chain
on the Debian manuals in English and in their Japanese translation."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pytest

from lmforge.pipelines.quality import (
    C4QualityConfig,
    C4QualityFilter,
    FineWebQualityConfig,
    FineWebQualityFilter,
    GopherQualityConfig,
    GopherQualityFilter,
    GopherRepetitionConfig,
    GopherRepetitionFilter,
    default_quality_filters,
)
from lmforge.pipelines.records import DROPPED, KEPT, empty_row, to_table
from lmforge.pipelines.steps import Pipeline
from lmforge.pipelines.stop_words import stop_word_count
from lmforge.pipelines.text import normalize_text
from lmforge.pipelines.words import count_sentences, sentences, words
from lmforge.pipelines.writing_systems import is_cjk, resolve_lang

DEBIAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"
DEBIAN = DEBIAN / "debian_docs_en_ja_de.jsonl"

# passes every filter with the defaults: 8 lines, one sentence each, 100+ words
PROSE = "\n".join(
    [
        "The package manager keeps track of every file that belongs to the system.",
        "When you install a program, it checks the dependencies and fetches them first.",
        "Most users never have to think about the details of that process at all.",
        "Still, it helps to know where the configuration files are kept on the disk.",
        "They live under the etc directory, and each package documents its own options.",
        "If something breaks after an upgrade, the logs usually say what went wrong.",
        "Reading them with patience is the quickest way to find the cause of the problem.",
        "Backups of your home directory protect the data that matters most to you.",
    ]
)
JA_PROSE = "\n".join(
    [
        "パッケージ管理システムはシステムに属するすべてのファイルを追跡します。",
        "プログラムをインストールするときには、依存関係を確認して先に取得します。",
        "ほとんどの利用者はその処理の詳細について考える必要はまったくありません。",
        "それでも、設定ファイルがディスクのどこにあるかを知っておくと役に立ちます。",
        "設定は etc ディレクトリーの下にあり、各パッケージが自分の選択肢を説明しています。",
        "更新の後に何かが壊れたら、たいていはログに何が起きたかが書かれています。",
        "落ち着いてログを読むことが、問題の原因を見つけるいちばんの近道です。",
        "ホームディレクトリーのバックアップは、あなたにとって大切なデータを守ります。",
    ]
)


def row(text: str, lang: str | None = "en") -> dict[str, Any]:
    return {"id": "doc", "text": text, "lang": lang, "meta": None}


def verdict(f: Any, text: str, lang: str | None = "en") -> str:
    result = f.filter(row(text, lang))
    return "kept" if result is True else result[1]


def rep_only(**rule: Any) -> GopherRepetitionFilter:
    off: dict[str, Any] = dict(
        dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None
    )
    return GopherRepetitionFilter(
        GopherRepetitionConfig(**{**off, "top_n_grams": (), "dup_n_grams": (), **rule})
    )


def quality_only(**rule: Any) -> GopherQualityFilter:
    names = ["min_doc_words", "max_doc_words", "min_avg_word_length", "max_avg_word_length"]
    names += ["max_symbol_word_ratio", "max_bullet_lines_ratio", "max_ellipsis_lines_ratio"]
    names += ["max_non_alpha_words_ratio", "min_stop_words"]
    return GopherQualityFilter(GopherQualityConfig(**{**dict.fromkeys(names), **rule}))


# --- words and sentences -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),  # what datatrove's spaCy English tokenizer returns
    [
        ("Hello, world!", ["Hello", ",", "world", "!"]),
        ("I don't know.", ["I", "do", "n't", "know", "."]),
        ("U.S.A. e.g., foo-bar", ["U.S.A.", "e.g.", ",", "foo", "-", "bar"]),
        ("See http://x.com/a?b=c now", ["See", "http://x.com/a?b=c", "now"]),
        ("(os.path.join)", ["(", "os.path.join", ")"]),
        ("def f(last):", ["def", "f(last", "):"]),
        ("It costs $10.", ["It", "costs", "$", "10", "."]),
        ("Mr. Smith's car", ["Mr.", "Smith", "'s", "car"]),
        ("and/or 3-4 5km", ["and/or", "3", "-", "4", "5", "km"]),
    ],
)
def test_english_words_follow_spacy(text: str, tokens: list[str]) -> None:
    assert words(text, "en") == tokens


def test_japanese_words_are_script_runs() -> None:
    assert words("パッケージを管理する。", "ja") == ["パッケージ", "を", "管理", "する", "。"]
    assert words("mc(1) を使います", "ja") == ["mc(1", ")", "を", "使", "います"]
    assert words("我们学习中文。", "zh") == ["我", "们", "学", "习", "中", "文", "。"]


def test_sentences_end_at_terminal_punctuation() -> None:
    assert sentences('"Go." He left.', "en") == ['"Go."', "He left."]
    assert count_sentences("Mr. Smith left. So did e.g. Jones.", "en") == 2
    assert sentences("今日は晴れ。明日は雨！本当？", "ja") == [
        "今日は晴れ。",
        "明日は雨！",
        "本当？",
    ]
    # `…` ends a sentence outside English only (datatrove's spaCy sentencizer ignores it)
    assert count_sentences("待って…それから", "ja") == 2
    assert count_sentences("Wait… then", "en") == 1


def test_language_resolution() -> None:
    assert resolve_lang(JA_PROSE, None) == "ja" and is_cjk(JA_PROSE)
    assert resolve_lang(PROSE, None) == "en" and not is_cjk(PROSE)
    assert resolve_lang("我们学习中文。", None) == "zh"
    assert resolve_lang("한국어 문장입니다", None) == "ko"
    assert [resolve_lang("", c) for c in ("ja-JP", "jpn", "EN", "de_DE")] == [
        "ja",
        "ja",
        "en",
        "de",
    ]


def test_stop_words() -> None:
    assert stop_word_count("", ["The", "cat"], "en") == 0  # case-sensitive, as datatrove
    assert stop_word_count("", ["the", "cat", "of"], "en") == 2
    assert stop_word_count("猫が庭にいる", [], "ja") == 4  # が に い いる, inside script runs
    assert stop_word_count("x", ["x"], "ko") is None  # no list: the rule is skipped


# --- Gopher repetition ---------------------------------------------------------------------


def test_repetition_passes_prose() -> None:
    assert verdict(GopherRepetitionFilter(), PROSE) == "kept"
    assert verdict(GopherRepetitionFilter(), JA_PROSE, "ja") == "kept"
    assert verdict(GopherRepetitionFilter(), "") == "gopher_rep/empty"


def test_duplicate_paragraphs() -> None:
    f = rep_only(dup_para_frac=0.3)
    para = [f"Paragraph number {i} says something new." for i in range(10)]
    assert verdict(f, "\n\n".join(para[:6] + para[:4])) == "gopher_rep/dup_para_frac"  # 4/10
    assert verdict(f, "\n\n".join(para[:7] + para[:3])) == "kept"  # 3/10 is not above 0.3
    f = rep_only(dup_para_char_frac=0.2)
    long = "A long paragraph that is repeated word for word later on in the text."
    assert verdict(f, "\n\n".join([long, "Short one.", long])) == "gopher_rep/dup_para_char_frac"
    assert verdict(f, "\n\n".join([long, "Short one.", "Short one."])) == "kept"


def test_duplicate_lines() -> None:
    f = rep_only(dup_line_frac=0.3)
    lines = [f"line {i}" for i in range(10)]
    assert verdict(f, "\n".join(lines[:6] + lines[:4])) == "gopher_rep/dup_line_frac"
    assert verdict(f, "\n".join(lines[:7] + lines[:3])) == "kept"
    f = rep_only(dup_line_char_frac=0.2)
    long = "This line is long enough to weigh a lot when it comes back."
    assert verdict(f, f"{long}\nshort\n{long}") == "gopher_rep/dup_line_char_frac"
    assert verdict(f, f"{long}\nshort\nshort") == "kept"


def test_top_ngrams() -> None:
    f = rep_only(top_n_grams=((2, 0.2),))
    assert verdict(f, "buy now " * 40 + PROSE) == "gopher_rep/top_2_gram"  # 280 of 970
    assert verdict(f, PROSE) == "kept"


def test_duplicated_ngrams() -> None:
    f = rep_only(dup_n_grams=((5, 0.15),))
    again = " ".join(PROSE.splitlines()[:3])  # a quarter of the text, said twice
    assert verdict(f, f"{PROSE}\n{again}") == "gopher_rep/duplicated_5_n_grams"
    assert verdict(f, f"{PROSE}\n{again[:60]}") == "kept"


# --- Gopher quality ------------------------------------------------------------------------


def test_quality_passes_prose_in_both_scripts() -> None:
    f = GopherQualityFilter()
    assert verdict(f, PROSE) == "kept"
    assert verdict(f, JA_PROSE, "ja") == "kept"
    assert verdict(f, JA_PROSE, None) == "kept"  # found to be Japanese by its script
    assert f.stats["skipped/avg_word_length:ja"] == 2  # no spaces: the rule does not apply


def test_word_count() -> None:
    f = quality_only(min_doc_words=50, max_doc_words=60)
    assert verdict(f, "word " * 49 + ". , ;") == "gopher_quality/gopher_short_doc"  # punct
    assert verdict(f, "word " * 50) == "kept"
    assert verdict(f, "word " * 61) == "gopher_quality/gopher_long_doc"


def test_average_word_length() -> None:
    f = quality_only(min_avg_word_length=3, max_avg_word_length=10)
    assert verdict(f, "ab " * 10) == "gopher_quality/gopher_below_avg_threshold"
    assert verdict(f, "abc " * 10) == "kept"  # exactly 3 is in range
    assert verdict(f, "internationalization " * 10) == "gopher_quality/gopher_above_avg_threshold"


def test_hashes_and_ellipses() -> None:
    f = quality_only(max_symbol_word_ratio=0.1)
    assert verdict(f, "#tag " * 2 + "word " * 8) == "gopher_quality/gopher_too_many_hashes"
    assert verdict(f, "#tag " + "word " * 9) == "kept"  # 1 per 11 tokens
    assert verdict(f, "so… " * 3 + "word " * 9) == "gopher_quality/gopher_too_many_ellipsis"


def test_bullet_and_ellipsis_lines() -> None:
    f = quality_only(max_bullet_lines_ratio=0.9, max_ellipsis_lines_ratio=0.3)
    bullets = ["- item"] * 10
    assert verdict(f, "\n".join(bullets)) == "gopher_quality/gopher_too_many_bullets"
    assert verdict(f, "\n".join([*bullets[:9], "A sentence."])) == "kept"  # 0.9 exactly
    trailing = ["and then..."] * 4 + ["Done."] * 6
    assert verdict(f, "\n".join(trailing)) == "gopher_quality/gopher_too_many_end_ellipsis"
    assert verdict(f, "\n".join([*trailing[1:], "Done."])) == "kept"


def test_alphabetic_words() -> None:
    f = quality_only(max_non_alpha_words_ratio=0.8)
    assert verdict(f, "1 2 3 4 5 a b c d e") == "gopher_quality/gopher_below_alpha_threshold"
    assert verdict(f, "1 2 a b c d e f g h") == "kept"


def test_stop_word_rule() -> None:
    f = quality_only(min_stop_words=2)
    assert verdict(f, "The cat sat on a mat.") == "gopher_quality/gopher_enough_stop_words"
    assert verdict(f, "The cat sat on the mat of mine.") == "kept"
    assert verdict(f, "Die Katze sitzt auf der Matte und schläft.", "de") == "kept"
    assert verdict(f, "パッケージ・マネージャー", "ja") == "gopher_quality/gopher_enough_stop_words"
    assert verdict(f, "한국어 문장입니다", "ko") == "kept"
    assert f.stats["skipped/stop_words:ko"] == 1


# --- C4 ------------------------------------------------------------------------------------


def test_c4_removes_lines_and_rewrites_text() -> None:
    f = C4QualityFilter()
    doc = row(
        "Title\n"
        + PROSE
        + "\nPlease enable JavaScript to view the comments.\nRead our privacy policy here."
        + "\nSee the wiki page[1] for the details."
        + "\nThe last line has no terminal punctuation at all"
    )
    assert f.filter(doc) is True
    assert doc["text"] == PROSE + "\nSee the wiki page for the details."
    assert f.stats["line-filter-javascript"] == 1 and f.stats["line-filter-policy"] == 1
    assert f.stats["line-filter-no_terminal_punc"] == 2  # "Title" and the last line


def test_c4_terminal_punctuation_is_optional() -> None:
    f = C4QualityFilter(C4QualityConfig(filter_no_terminal_punct=False))
    doc = row(PROSE + "\nAn unfinished line without a period\nWait for it...")
    assert f.filter(doc) is True
    assert doc["text"].endswith("without a period\nWait for it...")


def test_c4_page_rules() -> None:
    f = C4QualityFilter()
    assert verdict(f, PROSE + "\nLorem ipsum dolor sit amet.") == "c4_quality/lorem_ipsum"
    assert verdict(f, PROSE + "\nCall f() { return 1; } now.") == "c4_quality/curly_bracket"
    assert verdict(f, PROSE + "\n{}") == "kept"  # too few words: removed before the { check
    four = "\n".join(PROSE.splitlines()[:4])
    assert verdict(f, four) == "c4_quality/too_few_sentences"
    assert verdict(f, four.replace(".\n", ". Yes, really.\n")) == "kept"


def test_c4_sentence_mode() -> None:
    f = C4QualityFilter(C4QualityConfig(split_paragraph=False))
    doc = row(PROSE.replace("\n", " ") + " Please enable JavaScript to read on.")
    assert f.filter(doc) is True
    assert doc["text"] == PROSE.replace("\n", " ")  # sentences judged, joined by spaces


def test_c4_in_japanese() -> None:
    f = C4QualityFilter()
    doc = row(JA_PROSE + "\n目次", "ja")
    assert f.filter(doc) is True  # 。 ends a line; words are counted as script runs
    assert doc["text"] == JA_PROSE
    assert verdict(f, "\n".join(JA_PROSE.splitlines()[:4]), "ja") == "c4_quality/too_few_sentences"


# --- FineWeb -------------------------------------------------------------------------------


def test_fineweb_passes_prose() -> None:
    assert verdict(FineWebQualityFilter(), PROSE) == "kept"
    assert verdict(FineWebQualityFilter(), JA_PROSE, "ja") == "kept"
    assert verdict(FineWebQualityFilter(), "\n \n") == "fineweb_quality/empty"


def test_line_punctuation() -> None:
    lines = [f"A line about topic number {i} without an ending" for i in range(100)]
    f = FineWebQualityFilter()
    ended = [line + "." for line in lines[:12]] + lines[12:]
    assert verdict(f, "\n".join(ended)) == "kept"  # 12% is not below 0.12
    assert verdict(f, "\n".join(ended[1:])) == "fineweb_quality/line_punct_ratio"
    zero = FineWebQualityFilter(FineWebQualityConfig(line_punct_exclude_zero=True))
    assert verdict(zero, "\n".join(lines)) == "kept"


def test_short_lines_in_display_columns() -> None:
    f = FineWebQualityFilter()
    short = [f"Short line {i}." for i in range(7)] + [PROSE.splitlines()[i] for i in range(3)]
    assert verdict(f, "\n".join(short)) == "fineweb_quality/short_line_ratio"  # 7/10
    assert verdict(f, "\n".join([*short[1:], PROSE.splitlines()[4]])) == "kept"  # 6/10
    # 16 Japanese characters are 32 columns: not short, though only 16 characters long
    ja = [f"これは短い日本語の行で番号は{i}です。" for i in range(10)]
    assert all(len(line) < 30 for line in ja)
    assert verdict(f, "\n".join(ja), "ja") == "kept"


def test_duplicate_line_characters() -> None:
    f = FineWebQualityFilter()
    assert verdict(f, PROSE + "\n" + PROSE.splitlines()[0]) == "fineweb_quality/char_dup_ratio"


def test_list_ratio() -> None:
    lines = [f"Item {i}." for i in range(40)]
    f = FineWebQualityFilter(FineWebQualityConfig(short_line_thr=1.0))
    assert verdict(f, "\n".join(lines)) == "fineweb_quality/list_ratio"  # 39 newlines / 120
    assert verdict(f, " ".join(lines)) == "kept"


# --- the chain -----------------------------------------------------------------------------


def test_chain_in_a_pipeline_records_reasons_and_rewrites_text() -> None:
    rows = [
        empty_row(id="prose", text=PROSE + "\nMenu", lang="en"),
        empty_row(id="ja", text=JA_PROSE, lang="ja"),
        empty_row(id="spam", text="buy now " * 40, lang="en"),
    ]
    out = {r["id"]: r for r in Pipeline(default_quality_filters())(to_table(rows)).to_pylist()}
    assert out["prose"]["fate"] == KEPT and out["prose"]["text"] == PROSE  # C4 dropped "Menu"
    assert out["ja"]["fate"] == KEPT
    assert out["spam"]["fate"] == DROPPED
    assert (out["spam"]["step"], out["spam"]["reason"]) == ("gopher_rep", "gopher_rep/top_2_gram")


@pytest.mark.skipif(not DEBIAN.exists(), reason=f"Debian manuals corpus not found at {DEBIAN}")
def test_debian_manuals_keep_rates_match_across_scripts() -> None:
    kept: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    reasons: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    chain = default_quality_filters()
    for line in DEBIAN.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "fortunes" in record["source"]:  # compare the manuals, en vs ja translations
            continue
        doc = row(normalize_text(record["text"]), record["lang"])
        results = (f.filter(doc) for f in chain)  # in turn, each sees the text C4 rewrote
        failure = next((r[1] for r in results if isinstance(r, tuple) and not r[0]), None)
        total[record["lang"]] += 1
        kept[record["lang"]] += failure is None
        reasons[record["lang"]][failure or "kept"] += 1
    rate = {lang: kept[lang] / total[lang] for lang in total}
    print({lang: (f"{100 * rate[lang]:.1f}%", reasons[lang].most_common(4)) for lang in rate})
    assert set(rate) == {"en", "ja"}
    assert min(rate.values()) > 0.1  # real manuals survive in both scripts
    assert abs(rate["en"] - rate["ja"]) <= 0.15
