"""curate and filter-synthetic on a real local Ray: every record ends kept, dropped with a
reason, or quarantined with its error, and the counts reconcile."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.jobs import curate, filter_synthetic
from lmforge.pipelines.outputs import parquet_dataset
from lmforge.platform.config import load_recipe

from conftest import shared

pytestmark = pytest.mark.usefixtures("ray_local")

LONG = "Ray Data streams blocks of rows between tasks running on the cluster. " * 6


def rows(folder: Path) -> list[dict]:
    ds = parquet_dataset(str(folder))
    return ds.to_table().to_pylist() if ds is not None else []


def jsonl_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.open()]


def passes_quality(text: str) -> bool:
    """Whether FineWeb's rule chain keeps a text: planted leaks and copies are made from
    such sections, so that the step that drops them is the one under test."""
    from lmforge.pipelines.quality import default_quality_filters
    from lmforge.pipelines.text import normalize_text

    row = {"id": "x", "text": normalize_text(text), "lang": "en", "meta": None}
    return len(text) > 1500 and all(f.filter(row) is True for f in default_quality_filters())


def recipe_for(tmp: Path, stage: str, inputs: list[str], *sets: str):
    return load_recipe(
        None,
        stage=stage,
        input=inputs,
        output=str(tmp / "out"),
        overrides=[f"workdir={tmp / 'work'}", f"mlflow.tracking_uri=sqlite:///{tmp}/m.db", *sets],
    )


def test_curate_accounts_for_every_record(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    good = [{"id": f"doc-{i}", "text": f"Document {i}. {LONG}", "lang": "en"} for i in range(8)]
    lines = [json.dumps(r) for r in good]
    lines += [
        json.dumps({"id": "doc-dup", "text": "  " + good[3]["text"].upper() + "\n"}),  # dup
        json.dumps({"id": "doc-short", "text": "Too short."}),
        json.dumps({"id": "doc-short", "text": "Short too."}),  # ids can repeat in real data
        json.dumps({"id": "doc-empty", "text": " \u00a0\n\t "}),
        "{this is not json",
        json.dumps({"id": "doc-notext", "body": LONG}),
        json.dumps({"id": "doc-int", "text": 12345}),
        json.dumps(["a", "list"]),
    ]
    data = ("\n".join(lines) + "\n").encode() + b'{"id": "doc-latin1", "text": "caf\xe9"}\n'
    (src / "a.jsonl").write_bytes(data)
    with gzip.open(src / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"id": "gz-1", "text": "Gzip\u00a0text   with  spaces. " + LONG}) + "\n")
    (src / "c.txt").write_text("Plain text file.\r\n\r\n\r\n\r\n" + LONG, encoding="utf-8")
    pq.write_table(
        pa.table({"id": ["pq-1", "pq-2"], "text": [LONG + " parquet", None]}), src / "d.parquet"
    )

    # the reader, extraction, length and exact-dedup accounting alone (the quality, language
    # and near-dedup steps are exercised on real text below)
    only_basics = [
        "curate.quality={gopher_repetition: false, gopher_quality: false, c4: false, "
        "fineweb: false}",
        "curate.language.enabled=false",
        "curate.minhash.enabled=false",
    ]
    result = curate.run(recipe_for(tmp_path, "curate", [str(src)], *only_basics))
    out = tmp_path / "out"
    m = json.loads((out / "manifest.json").read_text())
    c = m["counts"]
    assert c == {"read": 21, "kept": 11, "dropped": 4, "quarantined": 6}
    assert c["read"] == c["kept"] + c["dropped"] + c["quarantined"]
    assert m["mlflow_run_id"] == result.run_id

    kept = {r["id"]: r for r in rows(out / "kept")}
    assert set(kept) == {*(r["id"] for r in good), "gz-1", "c.txt", "pq-1"}
    assert kept["gz-1"]["text"].startswith("Gzip text with spaces.")  # NBSP and runs folded
    assert kept["c.txt"]["text"].startswith("Plain text file.\n\nRay")  # CRLF, blank lines

    dropped = sorted((r["id"], r["step"], r["reason"]) for r in jsonl_rows(out / "dropped"))
    assert dropped == [
        ("doc-dup", "exact_dedup", "exact_duplicate"),
        ("doc-empty", "length", "empty"),
        ("doc-short", "length", "too_short"),
        ("doc-short", "length", "too_short"),
    ]
    assert sorted(r["id"] for r in rows(out / "dropped")) == [d[0] for d in dropped]

    quarantined = {r["id"]: r["error"] for r in jsonl_rows(out / "quarantined")}
    assert "invalid JSON" in quarantined["a.jsonl:13"]
    assert quarantined["doc-notext"] == "missing text field 'text'"
    assert "is int, not a string" in quarantined["doc-int"]
    assert "not an object" in quarantined["a.jsonl:16"]
    assert "invalid UTF-8" in quarantined["a.jsonl:17"]
    assert quarantined["pq-2"] == "missing text field 'text'"
    assert m["dropped_by_reason"] == {
        "exact_dedup/exact_duplicate": 1,
        "length/empty": 1,
        "length/too_short": 2,
    }
    assert result.metrics["rows_read"] == 21


def test_curate_real_multilingual_corpus(tmp_path: Path) -> None:
    """The default chain on real English, Japanese and German text, with planted
    benchmark leaks and near-duplicates: Japanese manuals are kept about as often as
    their English originals; leaks and copies are dropped, originals kept."""
    corpus = shared("corpus/debian_docs_en_ja_de.jsonl")
    gsm8k = shared("evals/gsm8k_test.jsonl")
    humaneval = shared("evals/HumanEval.jsonl.gz")
    mmlu = shared("evals/mmlu_test_all.csv")
    docs = [json.loads(line) for line in corpus.open(encoding="utf-8")]
    manuals = [d for d in docs if d["source"].startswith(("debian-faq", "debian-reference"))]
    en = [d for d in manuals if d["lang"] == "en" and passes_quality(d["text"])]
    # planted: eval items inside real prose, and near-copies of real sections
    question = json.loads(gsm8k.open().readline())["question"]
    with gzip.open(humaneval, "rt") as f:
        prompt = json.loads(f.readline())["prompt"]
    leak = [
        {"id": "leak-gsm8k", "text": en[0]["text"] + "\n\n" + question},
        {"id": "leak-humaneval", "text": en[1]["text"] + "\n\n" + prompt},
    ]
    planted = tmp_path / "planted.jsonl"
    copies = []
    for k, d in enumerate(en[2:6]):
        words = d["text"].split(" ")
        words[len(words) // 2] = "CHANGED"  # one word changed in a long section
        copies.append({"id": f"zz-copy-{k}", "text": " ".join(words), "original": d["id"]})
    planted.write_text("".join(json.dumps(r) + "\n" for r in leak + copies), encoding="utf-8")
    sets = [
        f"curate.decontam.eval_sets={json.dumps([str(gsm8k), str(humaneval), str(mmlu)])}",
        "curate.min_chars=50",
    ]
    curate.run(recipe_for(tmp_path, "curate", [str(corpus), str(planted)], *sets))
    out = tmp_path / "out"
    m = json.loads((out / "manifest.json").read_text())
    c = m["counts"]
    assert c["read"] == 2968 + len(leak) + len(copies)
    assert c["kept"] + c["dropped"] + c["quarantined"] == c["read"]
    assert c["quarantined"] == 0

    dropped = {r["id"]: r for r in jsonl_rows(out / "dropped")}
    assert dropped["leak-gsm8k"]["reason"].startswith("decontam/")
    assert dropped["leak-humaneval"]["reason"].startswith("decontam/")
    kept = {r["id"]: r for r in rows(out / "kept")}
    for copy in copies:
        assert dropped[copy["id"]]["reason"] == "near_duplicate"
        assert copy["original"] in kept  # the smallest id of the cluster stays
    # keep rates of the same manuals in English and in Japanese are within 15 points
    rate = {}
    for lang in ("en", "ja"):
        ids = [d["id"] for d in manuals if d["lang"] == lang]
        rate[lang] = sum(i in kept for i in ids) / len(ids)
    print("manual keep rates:", rate, "top drops:", m["dropped_by_reason"])
    assert rate["en"] > 0.1 and abs(rate["en"] - rate["ja"]) <= 0.15
    assert {r["lang"] for r in kept.values()} >= {"en", "ja", "de"}
    assert all("\b" not in r["text"] for r in kept.values())  # the manuals' backspaces


def test_filter_synthetic_on_shipped_and_real_data(tmp_path: Path) -> None:
    real = shared("synthetic/gpteacher_roleplay_gpt4.json")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "id": "s-1",
                        "conversations": [
                            {"from": "human", "value": "Hi"},
                            {"from": "gpt", "value": "Hello!"},
                        ],
                    }
                ),
                json.dumps({"id": "s-2", "prompt": "unknown shape"}),
                json.dumps(
                    {
                        "id": "s-3",
                        "instruction": "Who are you?",
                        "output": "I am ChatGPT, a language model trained by OpenAI.",
                    }
                ),
                json.dumps(
                    {
                        "id": "s-4",
                        "messages": [
                            {"role": "user", "content": "Write a poem"},
                            {
                                "role": "assistant",
                                "content": "As an AI language model, I cannot write poems.",
                            },
                        ],
                    }
                ),
                "[broken",
            ]
        )
        + "\n"
    )
    inputs = ["builtin:synthetic-examples", str(real), str(bad)]
    filter_synthetic.run(recipe_for(tmp_path, "filter-synthetic", inputs))
    out = tmp_path / "out"
    m = json.loads((out / "manifest.json").read_text())
    c = m["counts"]
    assert c["read"] == 49 + 1923 + 5
    assert c["read"] == c["kept"] + c["dropped"] + c["quarantined"]
    reasons = {r["id"]: r["reason"] for r in jsonl_rows(out / "dropped")}
    assert reasons["s-3"] == "identity" and reasons["s-4"] == "refusal"
    errors = {r["id"]: r["error"] for r in jsonl_rows(out / "quarantined")}
    assert set(errors) == {"s-2", "bad.jsonl:5"}
    # real GPT-4 role-play data is almost all kept (its identity words are role-play)
    real_dropped = [i for i in reasons if i.startswith("gpteacher")]
    assert len(real_dropped) < 0.03 * 1923
    kept = {r["id"]: r for r in rows(out / "kept")}
    s1 = kept["s-1"]
    assert [t["role"] for t in s1["messages"]] == ["user", "assistant"]
    assert s1["text"] == "<|user|>\nHi\n<|assistant|>\nHello!"
