"""Language ID reads prose: it abstains on texts too short to tell (and says so), and names
a translated manual's language when English commands and a table are embedded in it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lmforge.pipelines.langid import (
    LanguageFilter,
    LanguageFilterConfig,
    LanguageID,
    LanguageIDConfig,
)
from lmforge.pipelines.prose import is_code_line, prose_paragraphs, too_short
from lmforge.pipelines.records import empty_row
from lmforge.pipelines.synthetic.language import LanguageMismatchFilter
from lmforge.pipelines.text import normalize_text

from conftest import shared

FORMULA = "x+y = 4z, x*y = 4z^2, express x-y in z"
# English commands and a table, as a translated manual quotes them
COMMANDS = """$ sudo apt-get update
$ sudo apt-get install build-essential devscripts debhelper
$ apt-cache policy linux-image-amd64
$ dpkg -l | grep linux-image

| Package | Version | Architecture | Description |
|---|---|---|---|
| linux-image-amd64 | 6.1.0 | amd64 | Linux for 64-bit PCs (meta-package) |
| build-essential | 12.9 | amd64 | Informational list of build-essential packages |
| devscripts | 2.23.4 | amd64 | scripts to make the life of a Debian Package maintainer easier |"""


@pytest.fixture(scope="module")
def langid() -> LanguageID:
    return LanguageID()


def row(text: str) -> dict[str, Any]:
    return empty_row(id="r", text=text, lang=None, meta=None)


def test_too_short_says_why() -> None:
    assert too_short(FORMULA) == "18 letters < 20"
    assert too_short("Debian_Reference_ABCDEFG 2.1") == "3 words < 4"
    assert too_short("Wie spät ist es jetzt in Berlin?") is None
    assert too_short("これは日本語の文章です。") is None  # CJK: half the letters
    assert too_short("日本語") == "3 letters < 10"


def test_formula_prompt_is_not_a_language_mismatch() -> None:
    f = LanguageMismatchFilter()
    answer = "Since (x-y)^2 = (x+y)^2 - 4xy = 16z^2 - 16z^2 = 0, we get x - y = 0 for every z."
    conv = [{"role": "user", "content": FORMULA}, {"role": "assistant", "content": answer}]
    assert f.inspect(conv) is None
    assert f.detect(FORMULA) is None and f.detect(FORMULA, lenient=True) is None


def test_curation_abstains_with_the_reason_in_meta(langid: LanguageID) -> None:
    r = row(FORMULA)
    langid.apply(r)
    assert r["lang"] is None
    assert json.loads(r["meta"]) == {"lang_abstain": "18 letters < 20"}
    assert LanguageFilter().filter(r) is True  # not judged when every language is kept
    only_en = LanguageFilter(LanguageFilterConfig(languages=["en"]))
    assert only_en.filter(r) == (False, "lang/undetermined")


def test_code_lines_are_not_prose() -> None:
    assert all(is_code_line(x) for x in COMMANDS.splitlines() if x.strip())
    for prose in (
        "Debian は自由なオペレーティングシステムです。",
        "Man kann das Paket mit apt installieren.",
    ):
        assert not is_code_line(prose)
    assert prose_paragraphs(f"Ein Absatz.\n\n{COMMANDS}\n\nNoch einer.") == [
        "Ein Absatz.",
        "Noch einer.",
    ]


def test_mixed_manual_section_is_named_by_its_prose(langid: LanguageID) -> None:
    """A Japanese Debian Reference section with English commands and a table inserted:
    fastText on the whole document is unsure (<= 0.65, which drops it), its prose is not."""
    docs = [json.loads(x) for x in shared("corpus/debian_docs_en_ja_de.jsonl").open()]
    doc = next(d for d in docs if d["id"] == "debian-reference-ja_2.100-ja-00019")
    paras = normalize_text(doc["text"]).split("\n\n")
    mixed = "\n\n".join([*paras[:2], COMMANDS, *paras[2:]])
    r = row(mixed)
    langid.apply(r)
    meta = json.loads(r["meta"])
    assert meta["lang_doc"] == "ja" and meta["lang_doc_score"] <= 0.65  # whole-doc verdict kept
    assert r["lang"] == "ja" and meta["lang_score"] > 0.95
    assert LanguageFilter().filter(r) is True
    whole = LanguageID(LanguageIDConfig(by_prose=False))
    r = row(mixed)
    whole.apply(r)
    assert LanguageFilter().filter(r) == (False, "lang/low_score")
