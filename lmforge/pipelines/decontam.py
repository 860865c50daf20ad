"""Evaluation-set decontamination: drop training documents that contain test items.

An evaluation item becomes a set of n-grams; a document sharing any one of them with an
item is dropped, reason `decontam/<eval set>`, and its meta names the item and the n-gram.

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

import csv
import gzip
import hashlib
import io
import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from lmforge.pipelines.steps import Filter, update_meta
from lmforge.platform import storage

_WORD = re.compile(r"\w+")
_CHAR = re.compile(r"[^\W_]")  # a letter or digit
_CJK = re.compile(
    "[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
    "\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002fa1f]"
)
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator notes: 16-3-4=<<16-3-4=9>>9
_MULT = 0x9E3779B97F4A7C15  # odd, so the polynomial hash mixes every token


@dataclass(frozen=True)
class EvalItem:
    """id: unique within its set. text: the question or prompt, what a leak contains.
    renderings: the whole item as it is usually written out (question and answer,
    prompt and solution, question and choices), each beginning with `text`; their
    n-grams count too."""

    id: str
    text: str
    renderings: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvalSet:
    name: str  # the drop reason is decontam/<name>
    path: str
    format: str  # gsm8k | humaneval | mmlu | jsonl
    items: tuple[EvalItem, ...]


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


# ------------------------------------------------------------------------------ readers


def load_eval_set(path: str, *, field: str | None = None, name: str | None = None) -> EvalSet:
    """Read an evaluation set, recognising its format from the content.

    GSM8K-style JSONL (`question`, `answer`), HumanEval JSONL, gzipped or not (`prompt`,
    `canonical_solution`), MMLU-style CSV (header with `question`, `choice0`..`choice3`),
    or any JSONL with `field` naming the text. The name defaults to the file name without
    its extensions (`gsm8k_test`, `HumanEval`, `mmlu_test_all`).
    """
    fs, inner = storage.filesystem(path)
    with fs.open_input_stream(inner) as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = data.decode("utf-8-sig")
    name = name or _stem(path)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first:
        raise ValueError(f"{path}: the evaluation set is empty")
    if first.startswith("{"):
        records = list(_jsonl(text, path))
        keys = set(records[0])
        if field is not None:
            items = _items_by_field(records, field, name, path)
            return EvalSet(name, path, "jsonl", items)
        if {"prompt", "canonical_solution"} <= keys:
            return EvalSet(name, path, "humaneval", _humaneval(records, path))
        if {"question", "answer"} <= keys:
            return EvalSet(name, path, "gsm8k", _gsm8k(records, name, path))
        raise ValueError(
            f"{path}: unknown evaluation-set format: a JSONL record with keys {sorted(keys)}; "
            "expected GSM8K (question, answer) or HumanEval (prompt, canonical_solution), "
            "or pass field= to name the text field"
        )
    header = next(csv.reader([first]))
    if {"question", "choice0", "choice1", "choice2", "choice3"} <= set(header):
        return EvalSet(name, path, "mmlu", _mmlu(text, name))
    raise ValueError(
        f"{path}: unknown evaluation-set format: neither JSONL nor an MMLU-style CSV "
        f"(header {header[:8]}, expected question, choice0..choice3)"
    )


def _stem(path: str) -> str:
    base = PurePosixPath(path.rstrip("/")).name
    for ext in (".gz", ".jsonl", ".json", ".csv"):
        base = base.removesuffix(ext)
    return base


def _jsonl(text: str, path: str) -> Iterator[dict[str, Any]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{n}: a JSON {type(record).__name__}, not an object")
        yield record | {"_line": n}


def _need(record: dict[str, Any], key: str, path: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{path}:{record['_line']}: field {key!r} is missing or not a string")
    return value


def _gsm8k(records: list[dict[str, Any]], name: str, path: str) -> tuple[EvalItem, ...]:
    items = []
    for r in records:
        question, answer = _need(r, "question", path), _need(r, "answer", path)
        # leaked copies come both with the calculator notes (dataset dumps) and without
        clean = _CALCULATOR.sub("", answer)
        renderings = (f"{question}\n{answer}", f"{question}\n{clean}")
        items.append(EvalItem(f"{name}:{r['_line']}", question, renderings))
    return tuple(items)


def _humaneval(records: list[dict[str, Any]], path: str) -> tuple[EvalItem, ...]:
    items = []
    for r in records:
        prompt = _need(r, "prompt", path)
        solution = _need(r, "canonical_solution", path)
        task = r.get("task_id") or f"{_stem(path)}:{r['_line']}"
        items.append(EvalItem(str(task), prompt, (prompt + solution,)))
    return tuple(items)


def _mmlu(text: str, name: str) -> tuple[EvalItem, ...]:
    items = []
    for n, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), 1):
        question = row["question"] or ""
        choices = " ".join(row[f"choice{i}"] or "" for i in range(4))
        subject = row.get("subject")
        item_id = f"{name}:{subject}:{n}" if subject else f"{name}:{n}"
        items.append(EvalItem(item_id, question, (f"{question}\n{choices}",)))
    return tuple(items)


def _items_by_field(
    records: list[dict[str, Any]], field: str, name: str, path: str
) -> tuple[EvalItem, ...]:
    items = []
    for r in records:
        own = r.get("id", r.get("task_id"))
        item_id = str(own) if isinstance(own, str | int) else f"{name}:{r['_line']}"
        items.append(EvalItem(item_id, _need(r, field, path)))
    return tuple(items)


# ------------------------------------------------------------------------------ n-grams


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation: `Janet’s ducks` -> [janet, s, ducks]."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def characters(text: str) -> list[str]:
    """Lower-cased letters and digits, no spaces or punctuation."""
    return _CHAR.findall(unicodedata.normalize("NFKC", text).lower())


def cjk_share(text: str) -> float:
    """The share of letters and digits that are CJK ideographs, Kana or Hangul."""
    if not _CJK.search(text):
        return 0.0
    letters = len(_CHAR.findall(text))
    return len(_CJK.findall(text)) / letters if letters else 0.0


class _Hasher:
    """64-bit keys of token windows: sum of h[i+j] * P**(m-1-j) over the window, mod 2**64,
    h a token's blake2b hash. With prefix sums of h[j] * P**-j, every window of every
    length costs two vector operations (P is odd, so it has an inverse mod 2**64)."""

    CACHED_POWERS = 1 << 16  # tokens: documents longer than this compute their own

    def __init__(self) -> None:
        self.cache: dict[str, int] = {}
        self.up, self.down = _powers(1024)

    def tokens(self, tokens: list[str]) -> np.ndarray:
        """(T,) uint64 hashes of the tokens."""
        if len(self.cache) > 1_000_000:  # a long-running worker sees unbounded vocabulary
            self.cache.clear()
        out = list(map(self.cache.get, tokens))  # the loop in C; new tokens are rarer
        if None in out:
            for i, h in enumerate(out):
                if h is None:
                    digest = hashlib.blake2b(tokens[i].encode(), digest_size=8).digest()
                    out[i] = self.cache[tokens[i]] = int.from_bytes(digest, "little")
        return np.array(out, dtype=np.uint64)

    def windows(self, hashes: np.ndarray, lengths: Sequence[int]) -> list[np.ndarray]:
        """(T,) token hashes -> for each m in `lengths` (at most T), the (T-m+1,) keys of
        every m-token window, in order of position."""
        n = len(hashes)
        if n > len(self.up):
            up, down = _powers(n)
            if n <= self.CACHED_POWERS:
                self.up, self.down = up, down
        else:
            up, down = self.up, self.down
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(hashes * down[:n], out=prefix[1:])  # wraps mod 2**64, as intended
        return [(prefix[m:] - prefix[:-m]) * up[m - 1 : n] for m in lengths]


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(P**k, P**-k) mod 2**64 for k in 0..n-1."""
    up, down = np.ones(n, dtype=np.uint64), np.ones(n, dtype=np.uint64)
    np.cumprod(np.full(n - 1, _MULT, dtype=np.uint64), out=up[1:])
    np.cumprod(np.full(n - 1, pow(_MULT, -1, 1 << 64), dtype=np.uint64), out=down[1:])
    return up, down


class _Texts:
    """Token hashes of many texts end to end, so one numpy call keys all their windows."""

    def __init__(self) -> None:
        self.hashes: list[np.ndarray] = []
        self.spans: list[tuple[int, int, int]] = []  # (offset, length, item)
        self.size = 0

    def add(self, hashes: np.ndarray, item: int) -> None:
        self.spans.append((self.size, len(hashes), item))
        self.hashes.append(hashes)
        self.size += len(hashes)

    def windows(self, m: int, hasher: _Hasher) -> tuple[np.ndarray, np.ndarray]:
        """(keys, item of each) of the m-token windows that lie inside one text."""
        offset, length, item = np.array(self.spans, dtype=np.int64).T
        count = np.maximum(length - m + 1, 0)  # windows per text
        first_of_text = np.repeat(np.cumsum(count) - count, count)
        starts = np.repeat(offset, count) + np.arange(count.sum()) - first_of_text
        (keys,) = hasher.windows(np.concatenate(self.hashes), [m])
        return keys[starts], np.repeat(item, count)


@dataclass
class _Index:
    """The n-grams of one mode (word or char), all lengths together, sorted by key, and a
    one-hash Bloom filter over them: most windows of a clean document miss it, and it is
    small enough to stay in cache, where a binary search over all keys is not."""

    keys: np.ndarray  # (K,) uint64
    items: np.ndarray  # (K,) int32: the item the n-gram belongs to
    sizes: np.ndarray  # (K,) int16: its length in tokens
    lengths: list[int]  # the distinct lengths, ascending
    bloom: np.ndarray  # (2**bits / 8,) uint8, about 32 bits a key: ~3% pass by chance
    shift: int  # 64 - bits: a key's top bits choose its Bloom bit

    @classmethod
    def build(cls, by_length: dict[int, _Texts], hasher: _Hasher) -> _Index:
        lengths = sorted(by_length)
        parts = [by_length[m].windows(m, hasher) for m in lengths]
        keys = np.concatenate([k for k, _ in parts])
        items = np.concatenate([i for _, i in parts]).astype(np.int32)
        sizes = np.repeat(np.array(lengths, dtype=np.int16), [len(k) for k, _ in parts])
        # np.unique's first occurrence: an n-gram belongs to the first item that has it
        keys, first = np.unique(keys, return_index=True)
        bits = max(16, int(np.ceil(np.log2(32 * len(keys)))))
        bloom = np.zeros(1 << (bits - 3), dtype=np.uint8)
        top = (keys >> np.uint64(64 - bits)).astype(np.intp)
        np.bitwise_or.at(bloom, top >> 3, np.left_shift(1, top & 7).astype(np.uint8))
        return cls(keys, items[first], sizes[first], lengths, bloom, 64 - bits)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which of `keys` are in the index, their rows in it)."""
        top = (keys >> np.uint64(self.shift)).astype(np.intp)
        maybe = np.flatnonzero((self.bloom[top >> 3] >> (top & 7).astype(np.uint8)) & 1)
        at = np.minimum(np.searchsorted(self.keys, keys[maybe]), len(self.keys) - 1)
        found = self.keys[at] == keys[maybe]
        return maybe[found], at[found]


# ------------------------------------------------------------------------------ filter


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
        self._hasher = _Hasher()
        self.index = self._build(sets)  # "word" and "char", where there are such items

    def _build(self, sets: list[EvalSet]) -> dict[str, _Index]:
        texts: dict[str, dict[int, _Texts]] = defaultdict(lambda: defaultdict(_Texts))
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
                    rest = " ".join(" ".join(words(r)) for r in item.renderings)
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
        return {mode: _Index.build(by_length, self._hasher) for mode, by_length in texts.items()}

    def _sizes(self, mode: str) -> tuple[int, int]:
        if mode == "char":
            return self.cfg.n_chars, self.cfg.min_short_chars
        return self.cfg.n_words, self.cfg.min_short_words

    @staticmethod
    def _tokens(mode: str, text: str) -> list[str]:
        return characters(text) if mode == "char" else words(text)

    @property
    def ngrams(self) -> int:
        return sum(len(index.keys) for index in self.index.values())

    def match(self, text: str) -> tuple[str, str, str] | None:
        """(eval set name, item id, the shared n-gram) of the first match, or None.
        Words first, then characters where the index has CJK items and the text has CJK."""
        for mode in ("word", "char"):
            index = self.index.get(mode)
            if index is None or (mode == "char" and not _CJK.search(text)):
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
