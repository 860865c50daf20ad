"""Stop words per language, for Gopher's rule that a document has some (at least 2)."""

from __future__ import annotations

from collections.abc import Mapping

from lmforge.pipelines.writing_systems import SEGMENTED

_STOP_WORDS = {
    # datatrove gopher_quality_filter.py STOP_WORDS (Gopher, Rae et al. 2021)
    "en": "the be to of and that have with",
    # the most frequent function words, lower case as they occur inside a sentence
    "de": "der die das und ist zu den mit nicht von sich ein",
    "fr": "le la les de des et à un une est que du pour dans",
    "es": "el la los las de del que y en se por un una con para",
    # particles, auxiliaries and function words, from the common Japanese stop-word list
    "ja": "の に は を た が で て と し れ さ ある いる も する から な こと として い や れる "
    "など なっ ない この ため その あっ よう また もの という あり まで られ なる へ か だ これ "
    "によって により おり より による ず なり られる において ば なかっ なく しかし について せ "
    "だっ できる それ う ので なお のみ でき き つ における および いう さらに でも ら たり",
    "zh": "的 了 是 在 和 有 不 这 也 就 都 而 及 与 着 或 一个 没有 我们 他们",
}
# Gopher's "at least 2 stop words": SEGMENTED languages match them as substrings (particles
# sit inside script runs), the others as whole tokens, case-sensitively, as datatrove does
STOP_WORDS = {lang: frozenset(text.split()) for lang, text in _STOP_WORDS.items()}
StopWords = Mapping[str, frozenset[str]] | None


def stop_word_count(text: str, tokens: list[str], lang: str, table: StopWords = None) -> int | None:
    """Distinct stop words of `lang` (from `table`, default STOP_WORDS) in the text; None
    without a list for `lang`."""
    stop = (STOP_WORDS if table is None else table).get(lang)
    if stop is None:
        return None
    if lang in SEGMENTED:
        return sum(w in text for w in stop)
    return len(stop.intersection(tokens))
