"""MinHash LSH near-duplicate removal: signatures as pure numpy, then one run on a real
local Ray over documents of the shared corpus with planted near duplicates."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lmforge.pipelines.minhash import (
    GROUP,
    PUNCT,
    MinHashConfig,
    MinHasher,
    band_hashes,
    both_ways,
    cjk_documents,
    cluster_sizes,
    component_labels,
    fmix64,
    from_larger,
    hash_strings,
    keyed,
    large_star,
    minhash_dedup,
    shingle_hashes,
    small_star,
    unique_edges,
)
from lmforge.pipelines.records import ROW_SCHEMA, empty_row, to_table

from conftest import shared

CFG = MinHashConfig()
HASHER = MinHasher(CFG)


def corpus() -> list[dict[str, Any]]:
    path = shared("corpus/debian_docs_en_ja_de.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Word n-grams as lmforge cuts them (lowercase, whitespace, punctuation trimmed)."""
    words = [w.strip(PUNCT) for w in text.lower().split()]
    words = [w for w in words if w]
    return {tuple(words[i : i + n]) for i in range(max(len(words) - n + 1, 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def substitute(text: str, k: int, rng: random.Random) -> str:
    """`text` with k of its words replaced by words found nowhere else."""
    words = text.split()
    for i in rng.sample(range(len(words)), k):
        words[i] = f"qz{rng.randrange(10**9)}"
    return " ".join(words)


def bands(texts: list[str]) -> np.ndarray:
    sig, has = HASHER(pa.array(texts))
    assert has.all()
    return band_hashes(sig, CFG)  # (D, num_bands)


def candidates(a: str, b: str) -> bool:
    """Whether LSH puts the two texts in one bucket (they share a band)."""
    x, y = bands([a, b])
    return bool((x == y).any())


# ------------------------------------------------------------------------ pure logic


def test_signature_agreement_estimates_jaccard() -> None:
    rng = random.Random(3)
    docs = [d["text"] for d in corpus() if d["lang"] == "en" and len(d["text"].split()) >= 150]
    errors = []
    for text, k in zip(docs[:24], [1, 2, 4, 8, 16, 32] * 4, strict=True):
        copy = substitute(text, min(k, len(text.split()) // 4), rng)
        sig, _ = HASHER(pa.array([text, copy]))
        errors.append(float((sig[0] == sig[1]).mean()) - jaccard(text, copy))
    # 112 permutations: one estimate's standard deviation is at most 0.047
    assert abs(np.mean(errors)) < 0.03
    assert max(abs(e) for e in errors) < 0.16


def test_short_empty_and_cjk_documents() -> None:
    ja = "日本語の文章はスペースで単語を区切らないので文字の五文字組で比べます。"
    ja_copy = ja.replace("比べ", "比較し")
    sig, has = HASHER(pa.array(["three short words", "", None, ja, ja_copy]))
    assert has.tolist() == [True, False, False, True, True]  # fewer than n words: one shingle
    # character shingles: one edit leaves most 5-grams shared (as words, the sentence is
    # one token and the copy would share nothing)
    assert (sig[3] == sig[4]).mean() > 0.6
    assert candidates(ja, ja_copy)


def test_shingle_hashes_match_a_plain_fold() -> None:
    """Vectorized windows == folding each document's n-grams one by one, for documents
    longer than n, shorter than n (one shingle) and empty (none)."""
    rng = np.random.default_rng(0)
    mul, n = 0x9E3779B97F4A7C15, 5
    for _ in range(50):
        lens = rng.integers(0, 9, rng.integers(1, 8))
        offsets = np.concatenate([[0], np.cumsum(lens)])
        tokens = rng.integers(0, 2**64, offsets[-1], dtype=np.uint64)
        expected = []
        for d in range(len(lens)):
            t = [int(x) for x in tokens[offsets[d] : offsets[d + 1]]]
            for i in range(max(len(t) - n + 1, 1) if t else 0):
                h = 0
                for k, x in enumerate(t[i : i + n]):
                    h = (h * mul + x) % 2**64 if k else x
                expected.append(h)
        got, counts = shingle_hashes(tokens, offsets, n)
        assert counts.sum() == len(expected)
        assert (got == fmix64(np.array(expected, np.uint64)) >> np.uint64(32)).all()


def test_hash_strings_is_stable_across_layouts() -> None:
    words = ["alpha", "", "βeta", "alpha", "日本"]
    h = hash_strings(pa.array(words))
    assert h[0] == h[3] and len(set(h.tolist())) == 4
    sliced = pa.array(["x", *words]).slice(1)  # a non-zero array offset
    chunked = pa.chunked_array([words[:2], words[2:]])
    assert (hash_strings(sliced) == h).all()
    assert (hash_strings(chunked) == h).all()
    assert (hash_strings(pa.array(words, pa.large_string())) == h).all()


def shuffled(edges: pa.Table, prepare: Any, fn: Any, key: str, groups: int = 3) -> pa.Table:
    """What one groupby round does on Ray: key, split into groups, `fn` on each group."""
    t = keyed(edges, key, groups, prepare)
    parts = [fn(t.filter(pc.equal(t[GROUP], g))) for g in range(groups)]
    return pa.concat_tables([p for p in parts if p.num_rows])


def union_find(names: list[str], pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Each id that is not its component's smallest -> that smallest id."""
    parent = {x: x for x in names}

    def find(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in names if find(x) != x}


def test_star_rounds_find_components_as_union_find_does() -> None:
    rng = random.Random(5)
    for trial in range(20):
        n = rng.randrange(2, 120)
        names = [f"n{rng.randrange(10**6):06d}-{i}" for i in range(n)]  # ids in random order
        pairs = [(names[i], names[i + 1]) for i in range(n - 1) if rng.random() < 0.8]  # paths
        pairs += [tuple(rng.sample(names, 2)) for _ in range(rng.randrange(n // 3 + 1))]
        expected = union_find(names, pairs)
        sizes = {r: 1 + list(expected.values()).count(r) for r in set(expected.values())}

        edges = unique_edges(*zip(*(sorted(p) for p in pairs), strict=True)) if pairs else None
        for _ in range(CFG.max_cc_iterations):
            if edges is None:
                break
            edges = shuffled(edges, both_ways, large_star, "node")
            moved = pc.sum(edges["changed"]).as_py()
            edges = shuffled(edges, from_larger, small_star, "node")
            if moved + pc.sum(edges["changed"]).as_py() == 0:
                break
        else:
            raise AssertionError(f"trial {trial}: no convergence")
        labels = shuffled(edges, None, component_labels, "src").to_pylist() if edges else []
        assert {r["id"]: r["_root"] for r in labels} == expected
        assert all(r["_size"] == sizes[r["_root"]] for r in labels)


# ------------------------------------------------------------------------ on Ray


def planted() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows with planted near duplicates, and what each group of ids is."""
    rng = random.Random(7)
    docs = sorted(corpus(), key=lambda d: d["id"])
    western = [d for d in docs if d["lang"] in ("en", "de")]
    # a chain of six overlapping 200-word windows, each shifted 15 words: neighbours have
    # Jaccard ~0.86, the ends ~0.45
    long_doc = next(d for d in western if len(d["text"].split()) >= 300)
    words = long_doc["text"].split()
    chain = [" ".join(words[15 * i : 15 * i + 200]) for i in range(6)]
    seen = {(b, h) for row in bands(chain) for b, h in enumerate(row.tolist())}
    # unrelated documents: none shares a band with another or with the chain
    picked = []
    for d in western:
        n = len(d["text"].split())
        if d is long_doc or not 100 <= n <= 600:
            continue
        mine = {(b, h) for b, h in enumerate(bands([d["text"]])[0].tolist())}
        if not mine & seen:
            picked.append(d["text"])
            seen |= mine
        if len(picked) == 30:
            break
    ja = [d["text"] for d in docs if d["lang"] == "ja" and len(d["text"]) >= 600][:2]

    rows = []
    for i, text in enumerate(picked[:15]):  # an original and two copies, a few words changed
        k = max(1, len(text.split()) // 100)
        rows.append(empty_row(id=f"near-{i:02d}", text=text, meta=json.dumps({"n": i})))
        rows.append(empty_row(id=f"near-{i:02d}~1", text=substitute(text, k, rng)))
        # one copy sorts before its original: the smallest id is kept, whichever came first
        copy_id = "a-near-00" if i == 0 else f"near-{i:02d}~2"
        rows.append(empty_row(id=copy_id, text=substitute(text, k, rng)))
    rows += [empty_row(id=f"solo-{i:02d}", text=t) for i, t in enumerate(picked[15:])]
    rows += [empty_row(id=f"chain-{i}", text=t) for i, t in enumerate(chain)]
    ja_copy = list(ja[0])
    for pos in (100, 300, 500):  # three characters changed
        ja_copy[pos] = "鳥"
    rows.append(empty_row(id="ja-0", text=ja[0]))
    rows.append(empty_row(id="ja-0~1", text="".join(ja_copy)))
    rows.append(empty_row(id="ja-1", text=ja[1]))
    # rows that are no longer kept pass through, even when their text duplicates a kept one
    rows.append(
        empty_row(
            id="zz-dropped",
            text=picked[0],
            fate="dropped",
            step="length_filter",
            reason="too_short",
            meta=json.dumps({"n": 0}),
        )
    )
    rows.append(
        empty_row(id="zz-quarantined", fate="quarantined", step="read", error="bad JSON", raw="{")
    )
    return rows, {"chain": chain, "ja": ja}


@pytest.fixture(scope="module")
def run(ray_local: None) -> dict[str, Any]:
    import ray.data

    rows, extra = planted()
    ds = ray.data.from_arrow(to_table(rows)).repartition(3)
    out = minhash_dedup(ds, CFG).materialize()
    return {
        "input": {r["id"]: r for r in rows},
        "output": {r["id"]: r for r in out.take_all()},
        "schema": out.schema().base_schema,
        "sizes": cluster_sizes(out),
        **extra,
    }


def meta(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(row["meta"]) if row["meta"] else {}


def test_counts_and_schema_reconcile(run: dict[str, Any]) -> None:
    assert len(run["output"]) == len(run["input"])
    assert set(run["output"]) == set(run["input"])
    assert run["schema"] == ROW_SCHEMA


def test_planted_copies_dropped_smallest_id_kept(run: dict[str, Any]) -> None:
    out = run["output"]
    for i in range(15):
        original = f"near-{i:02d}"
        copies = [f"{original}~1", "a-near-00" if i == 0 else f"{original}~2"]
        kept = "a-near-00" if i == 0 else original
        assert out[kept]["fate"] == "kept", kept
        assert out[kept]["meta"] == run["input"][kept]["meta"]  # the kept row is untouched
        for row in (out[c] for c in [original, *copies] if c != kept):
            assert (row["fate"], row["step"], row["reason"]) == (
                "dropped",
                "minhash_dedup",
                "near_duplicate",
            ), row["id"]
            assert meta(row)["duplicate_of"] == kept and meta(row)["cluster_size"] == 3
    assert meta(out["near-00"]) == {"n": 0, "duplicate_of": "a-near-00", "cluster_size": 3}


def test_unrelated_documents_kept(run: dict[str, Any]) -> None:
    solos = [r for i, r in run["output"].items() if i.startswith("solo-") or i == "ja-1"]
    assert len(solos) == 16
    assert all(r["fate"] == "kept" and r["step"] is None for r in solos)


def test_transitive_chain_is_one_cluster(run: dict[str, Any]) -> None:
    chain = run["chain"]
    # what makes it a chain: neighbours meet in a bucket, the two ends never do
    assert all(candidates(a, b) for a, b in itertools.pairwise(chain))
    assert not candidates(chain[0], chain[-1]) and jaccard(chain[0], chain[-1]) < 0.5
    out = run["output"]
    assert out["chain-0"]["fate"] == "kept"
    for i in range(1, 6):
        row = out[f"chain-{i}"]
        assert row["fate"] == "dropped"
        assert meta(row) == {"duplicate_of": "chain-0", "cluster_size": 6}


def test_cjk_copy_found_by_character_shingles(run: dict[str, Any]) -> None:
    out = run["output"]
    assert out["ja-0"]["fate"] == "kept"
    assert meta(out["ja-0~1"]) == {"duplicate_of": "ja-0", "cluster_size": 2}
    docs = corpus()
    is_cjk = cjk_documents(pa.array([run["ja"][0], *(d["text"] for d in docs)]), CFG.cjk_share)
    assert is_cjk[0]  # shingled by characters
    langs = np.array([d["lang"] for d in docs])
    assert not is_cjk[1:][langs != "ja"].any()
    assert is_cjk[1:][langs == "ja"].mean() > 0.85


def test_rows_not_kept_pass_through_untouched(run: dict[str, Any]) -> None:
    for i in ("zz-dropped", "zz-quarantined"):
        assert run["output"][i] == run["input"][i]


def test_cluster_size_histogram(run: dict[str, Any]) -> None:
    assert run["sizes"] == {2: 1, 3: 15, 6: 1}


def test_no_near_duplicates_changes_nothing(ray_local: None) -> None:
    import ray.data

    texts = [d["text"] for d in corpus() if d["lang"] == "en"][:3]
    rows = [empty_row(id=f"d{i}", text=t) for i, t in enumerate(texts)]
    rows.append(empty_row(id="q", fate="quarantined", step="read", error="bad JSON"))
    out = minhash_dedup(ray.data.from_arrow(to_table(rows)), CFG).take_all()
    assert sorted(out, key=lambda r: r["id"]) == rows
