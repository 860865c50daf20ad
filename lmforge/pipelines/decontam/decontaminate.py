"""The filter: drop a document that shares an n-gram with an evaluation item.

Tokens. Text is NFKC-normalized and lower-cased. Latin-script (and any space-separated)
text is cut into `\\w+` words, which strips punctuation and makes the match blind to
re-wrapped whitespace, quotes and markup. An item whose letters are mostly CJK, Kana or
Hangul (share >= `cjk_share`) has no spaces to cut at, so it is cut into characters
(letters and digits only) instead. A document is checked in every mode the index holds:
by words always, by characters too when the index has CJK items and the document has
CJK text (so an English item quoted in a Japanese page is still found).

Sizes. 13 words, as in GPT-3 and the Llama 2 contamination study: long enough that two
independent texts almost never share one, short enough that a paraphrased surrounding
or a reformatted choice list does not hide the item. 50 characters for CJK: Chinese
spends about 1.5 characters and Japanese 2-3 on what English says in a word, so 13
words would be some 25 characters, and 25 characters of Japanese are a set phrase
(`インストールするには次のコマンドを実行してください` is 25). 50 is about 20-30
words' worth: the cautious side, because CJK has no word boundaries to anchor a match.

Short items. An item shorter than n contributes its whole normalized text as one n-gram
of its own length (`it has been suggested that learned helplessness may be related to`,
11 words, is an 11-gram), and a document is checked at every such length. Short texts
are where false positives come from: `which of the following is true` is a template,
not a leak. Two guards: a short item needs at least `min_short_words` words (8;
`min_short_chars` for CJK), and a short text that several different items share is a
template and is left out (1133 of MMLU's 14042 questions go one way or the other).
What is left (`the smallest units of meaning in a language are`) can still occur in a
textbook that never saw MMLU; the dropped rows carry the n-gram, which is how to check.

The index holds 64-bit keys of the n-grams, sorted, one array per mode with all lengths
together, and a Bloom filter in front: about 18 bytes an n-gram, 17 MB for GSM8K,
HumanEval and MMLU (946k n-grams). The keys do not depend on the process (no `hash()`
seed), so the filter may be pickled to workers; better, construct it in each actor.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmforge.pipelines.decontam.eval_sets import EvalSet, load_eval_set
from lmforge.pipelines.decontam.ngram_index import NgramIndex, TokenBatch, WindowHasher
from lmforge.pipelines.steps import Filter, update_meta
from lmforge.pipelines.words import match_characters, match_words
from lmforge.pipelines.writing_systems import CJK_RE, cjk_share


@dataclass(kw_only=True)
class DecontamConfig:
    """n_words: n-gram size in words. n_chars: n-gram size in characters, for CJK items.
    cjk_share: the share of an item's letters that are CJK/Kana/Hangul for it to be cut
        into characters. min_short_words / min_short_chars: the shortest item (shorter
        than n) that still counts, as one n-gram of its own length."""

    n_words: int = 13
    n_chars: int = 50
    cjk_share: float = 0.3
    min_short_words: int = 8
    min_short_chars: int = 20


class Decontaminate(Filter):
    """Drops a document that shares an n-gram with any item of the evaluation sets.

    eval_sets: EvalSets, or paths read with `load_eval_set` (use an EvalSet for a JSONL
    that needs `field=`). The index is built here, once per process (a Ray actor).
    """

    name = "decontam"

    def __init__(
        self, eval_sets: Sequence[EvalSet | str], cfg: DecontamConfig | None = None
    ) -> None:
        self.cfg = cfg or DecontamConfig()
        sets = [s if isinstance(s, EvalSet) else load_eval_set(s) for s in eval_sets]
        self.items: list[tuple[str, str]] = []  # (eval set name, item id)
        self.skipped_short = 0  # items too short to count, or templates shared by several
        self._hasher = WindowHasher()
        self.index = self._build(sets)  # "word" and "char", where there are such items

    def _build(self, sets: list[EvalSet]) -> dict[str, NgramIndex]:
        texts: dict[str, dict[int, TokenBatch]] = defaultdict(lambda: defaultdict(TokenBatch))
        # short text -> (item, its renderings normalized) of every item with that text
        short: dict[tuple[str, tuple[str, ...]], list[tuple[int, str]]] = defaultdict(list)
        for s in sets:
            for item in s.items:
                index = len(self.items)
                self.items.append((s.name, item.id))
                mode = "char" if cjk_share(item.text) >= self.cfg.cjk_share else "word"
                n, least = self._sizes(mode)
                tokens = self._tokens(mode, item.text)
                if len(tokens) >= n:
                    if not item.renderings:  # else they begin with it: their n-grams have it
                        texts[mode][n].add(self._hasher.tokens(tokens), index)
                elif len(tokens) >= least:
                    rest = " ".join(" ".join(match_words(r)) for r in item.renderings)
                    short[(mode, tuple(tokens))].append((index, rest))
                else:
                    self.skipped_short += 1
                for rendering in item.renderings:
                    tokens = self._tokens(mode, rendering)
                    if len(tokens) >= n:
                        texts[mode][n].add(self._hasher.tokens(tokens), index)
        for (mode, tokens_of_text), holders in short.items():
            if len({rest for _, rest in holders}) > 1:
                # one text, items that differ otherwise: a template, `which of the following
                # is true`; the same item twice (MMLU repeats a few) still counts
                self.skipped_short += len(holders)
                continue
            hashes = self._hasher.tokens(list(tokens_of_text))
            texts[mode][len(hashes)].add(hashes, holders[0][0])
        return {
            mode: NgramIndex.build(by_length, self._hasher) for mode, by_length in texts.items()
        }

    def _sizes(self, mode: str) -> tuple[int, int]:
        if mode == "char":
            return self.cfg.n_chars, self.cfg.min_short_chars
        return self.cfg.n_words, self.cfg.min_short_words

    @staticmethod
    def _tokens(mode: str, text: str) -> list[str]:
        return match_characters(text) if mode == "char" else match_words(text)

    @property
    def ngrams(self) -> int:
        return sum(len(index.keys) for index in self.index.values())

    def match(self, text: str) -> tuple[str, str, str] | None:
        """(eval set name, item id, the shared n-gram) of the first match, or None.
        Words first, then characters where the index has CJK items and the text has CJK."""
        for mode in ("word", "char"):
            index = self.index.get(mode)
            if index is None or (mode == "char" and not CJK_RE.search(text)):
                continue
            tokens = self._tokens(mode, text)
            lengths = [m for m in index.lengths if m <= len(tokens)]
            if not lengths:
                continue
            windows = self._hasher.windows(self._hasher.tokens(tokens), lengths)
            hits, rows = index.lookup(np.concatenate(windows))  # all lengths in one go
            if not len(hits):
                continue
            # where each hit is: in which length's windows, at which position
            starts = np.cumsum([0] + [len(w) for w in windows])
            k = np.searchsorted(starts, hits, side="right") - 1
            sizes, positions = np.array(lengths)[k], hits - starts[k]
            same = index.sizes[rows] == sizes  # the length agrees too: no freak collision
            if not same.any():
                continue
            sizes, positions, rows = sizes[same], positions[same], rows[same]
            first = np.lexsort((-sizes, positions))[0]  # the earliest, then the longest
            pos, m, item = int(positions[first]), int(sizes[first]), int(index.items[rows[first]])
            joiner = "" if mode == "char" else " "
            return (*self.items[item], joiner.join(tokens[pos : pos + m]))
        return None

    def filter(self, row: dict[str, Any]) -> bool | tuple[bool, str]:
        found = self.match(row["text"])
        if found is None:
            return True
        eval_set, item, ngram = found
        update_meta(row, decontam={"eval_set": eval_set, "item": item, "ngram": ngram})
        return False, f"decontam/{eval_set}"
