"""Writing systems: which characters are Han, Kana, Hangul or Thai, and how text written
without spaces between words is cut into them.

Japanese, Chinese and Thai put no spaces between words, so their text is cut by script:
in Japanese a run of kanji, hiragana or katakana is a word (`パッケージを管理する` ->
`パッケージ を 管理 する`); in Chinese and Thai each Han or Thai character is (most Chinese
words have one or two; Thai words are longer: an approximation). Punctuation (`。`) is a
token of its own; Latin runs inside go through the English rules (`words.chunk_tokens`).

The script ranges are regex class bodies of literal characters, which Python's `re` and
RE2 (pyarrow's `pc.count_substring_regex`, used by MinHash) read alike.
"""

from __future__ import annotations

import re

HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3005-\u3007\U00020000-\U0002fa1f"
HIRAGANA = "\u3041-\u309f"
KATAKANA = "\u30a0-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9f"
HANGUL = "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
THAI = "\u0e00-\u0e7f"
# The Hiragana and Katakana blocks whole: with the middle dot ・ (U+30FB), which
# segmentation keeps out of KATAKANA as punctuation, and the unassigned U+3040
KANA = "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
# CJK ideographs (with 々〆〇 and the supplementary planes), Kana, Hangul (jamo,
# compatibility jamo, syllables): the union of the three classes MinHash, decontamination
# and the word rules each had. MinHash's lacked 々〆〇, the Katakana phonetic extensions
# (U+31F0-31FF) and the ideographs beyond U+FFFF; decontamination's lacked the first two.
CJK = f"[{HAN}{KANA}{HANGUL}]"
CJK_RE = re.compile(CJK)
LETTER_OR_DIGIT_RE = re.compile(r"[^\W_]")


def cjk_share(text: str) -> float:
    """The share of letters and digits that are CJK ideographs, Kana or Hangul."""
    if not CJK_RE.search(text):
        return 0.0
    letters = len(LETTER_OR_DIGIT_RE.findall(text))
    return len(CJK_RE.findall(text)) / letters if letters else 0.0


# scripts written without spaces between words: CJK, without the Kana punctuation, and Thai
_UNSPACED_RE = re.compile(f"[{HAN}{HIRAGANA}{KATAKANA}{HANGUL}{THAI}]")
_KANA_RE = re.compile(f"[{HIRAGANA}{KATAKANA}]")
_LETTER_RE = re.compile(r"[^\W\d_]")
_SCRIPTS = HAN + HIRAGANA + KATAKANA + HANGUL + THAI
# CJK punctuation and full-width forms that are not letters or digits: tokens of their own
_WIDE_PUNCT = (
    "\u3000-\u3004\u3008-\u303f\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65…‥"
)
_OTHER = f"[^\\s{_SCRIPTS}{_WIDE_PUNCT}]+"
_RUNS = f"[{HAN}]+|[{HIRAGANA}]+|[{KATAKANA}]+|[{HANGUL}]+|[{THAI}]+"
_CHARS = f"[{HAN}]|[{KATAKANA}{HIRAGANA}]+|[{HANGUL}]+|[{THAI}]"  # Han, Thai: one each
SCRIPT_SEGMENTS = {"ja": re.compile(f"{_RUNS}|({_OTHER})|\\S")}
SCRIPT_SEGMENTS |= {lang: re.compile(f"{_CHARS}|({_OTHER})|\\S") for lang in ["zh", "th"]}
"""Per language written without spaces, a pattern whose matches are its words; a match of
group 1 is a run of other text (Latin, digits) for the word rules to split."""
SEGMENTED = frozenset(SCRIPT_SEGMENTS)
"""Languages written without spaces between words: segmented by script, not by spaces."""

_ISO_639_3 = dict(eng="en", jpn="ja", zho="zh", cmn="zh", tha="th", kor="ko", deu="de")
_ISO_639_3 |= dict(fra="fr", spa="es")


def is_cjk(text: str, threshold: float = 0.3) -> bool:
    """True when at least `threshold` of the letters are Han, kana, Hangul or Thai."""
    letters = len(_LETTER_RE.findall(text))
    return letters > 0 and len(_UNSPACED_RE.findall(text)) >= threshold * letters


def resolve_lang(text: str, lang: str | None) -> str:
    """The ISO 639-1 code to segment `text` with: `lang` normalized ("ja-JP", "jpn" -> "ja"),
    else guessed from the script (kana -> ja, Hangul -> ko, Thai -> th, Han -> zh), else
    "en", datatrove's default language."""
    if lang:
        code = lang.replace("_", "-").split("-")[0].lower()
        return _ISO_639_3.get(code, code)
    if not is_cjk(text):
        return "en"
    if _KANA_RE.search(text):
        return "ja"
    counts = {k: len(re.findall(f"[{r}]", text)) for k, r in (("zh", HAN), ("ko", HANGUL))}
    counts["th"] = len(re.findall(f"[{THAI}]", text))
    return max(counts, key=counts.__getitem__)  # a tie goes to zh
