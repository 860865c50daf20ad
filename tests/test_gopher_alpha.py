"""Gopher's "80% of words contain a letter": over whitespace-separated words without
punctuation-only tokens (the paper, the default chain), or over every token (datatrove,
`configs/curate-parity.yaml`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from lmforge.pipelines.config import CurateConfig
from lmforge.pipelines.curation import curate_steps
from lmforge.pipelines.quality import GopherQualityConfig, GopherQualityFilter, alpha_ratio
from lmforge.pipelines.records import empty_row

# French typography spaces its punctuation: each `:`, `«`, `»`, `;`, `?` is a token
FRENCH = " ".join(
    [
        "Voici ce dont vous avez besoin : un compte , une clé ; et « Tasks » — rien de plus !",
        "Le paquet s'installe avec « apt » ; ensuite , lisez la page : elle explique tout .",
    ]
    * 4
)


def verdict(how: str, text: str) -> bool | tuple[bool, str]:
    off = ("min_doc_words", "max_doc_words", "min_stop_words", "min_avg_word_length")
    rules = dict.fromkeys(off, None)
    f = GopherQualityFilter(GopherQualityConfig(alpha_words=how, **rules))  # type: ignore[arg-type]
    return f.filter(empty_row(id="r", text=FRENCH if text == "fr" else text, lang="fr"))


def test_spaced_punctuation_fails_only_datatrove_counting() -> None:
    assert alpha_ratio(FRENCH, FRENCH.split(), "fr", "whitespace") == 1.0
    assert alpha_ratio(FRENCH, FRENCH.split(), "fr", "datatrove") < 0.8
    assert verdict("whitespace", "fr") is True
    assert verdict("datatrove", "fr") == (False, "gopher_quality/gopher_below_alpha_threshold")


def test_numbers_are_still_words_without_letters() -> None:
    text = "1999 2000 2001 2002 2003 avec deux mots"
    assert verdict("whitespace", text) == (False, "gopher_quality/gopher_below_alpha_threshold")


def test_default_chain_counts_words_and_parity_recipe_keeps_datatrove() -> None:
    def gopher(cfg: dict) -> GopherQualityFilter:
        return next(s for s in curate_steps(cfg) if isinstance(s, GopherQualityFilter))

    no_lang = {"language": {"enabled": False}}
    assert gopher(no_lang).cfg.alpha_words == "whitespace"
    assert CurateConfig().quality.gopher_alpha_words == "whitespace"
    parity = yaml.safe_load((Path(__file__).parents[1] / "configs" / "curate-parity.yaml").open())
    assert gopher(parity["curate"]).cfg.alpha_words == "datatrove"
