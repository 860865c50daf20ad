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

    result = curate.run(recipe_for(tmp_path, "curate", [str(src)]))
    out = tmp_path / "out"
    m = json.loads((out / "manifest.json").read_text())
    c = m["counts"]
    assert c == {"read": 20, "kept": 11, "dropped": 3, "quarantined": 6}
    assert c["read"] == c["kept"] + c["dropped"] + c["quarantined"]
    assert m["mlflow_run_id"] == result.run_id

    kept = {r["id"]: r for r in rows(out / "kept")}
    assert set(kept) == {*(r["id"] for r in good), "gz-1", "c.txt", "pq-1"}
    assert kept["gz-1"]["text"].startswith("Gzip text with spaces.")  # NBSP and runs folded
    assert kept["c.txt"]["text"].startswith("Plain text file.\n\nRay")  # CRLF, blank lines

    dropped = {r["id"]: (r["step"], r["reason"]) for r in jsonl_rows(out / "dropped")}
    assert dropped == {
        "doc-dup": ("exact_dedup", "exact_duplicate"),
        "doc-short": ("length", "too_short"),
        "doc-empty": ("length", "empty"),
    }
    assert {r["id"] for r in rows(out / "dropped")} == set(dropped)

    quarantined = {r["id"]: r["error"] for r in jsonl_rows(out / "quarantined")}
    assert "invalid JSON" in quarantined["a.jsonl:12"]
    assert quarantined["doc-notext"] == "missing text field 'text'"
    assert "is int, not a string" in quarantined["doc-int"]
    assert "not an object" in quarantined["a.jsonl:15"]
    assert "invalid UTF-8" in quarantined["a.jsonl:16"]
    assert quarantined["pq-2"] == "missing text field 'text'"
    assert m["dropped_by_reason"] == {
        "exact_dedup/exact_duplicate": 1,
        "length/empty": 1,
        "length/too_short": 1,
    }
    assert result.metrics["rows_read"] == 20


def test_curate_real_multilingual_corpus(tmp_path: Path) -> None:
    corpus = shared("corpus/debian_docs_en_ja_de.jsonl")
    curate.run(recipe_for(tmp_path, "curate", [str(corpus)], "curate.min_chars=50"))
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    c = m["counts"]
    assert c["read"] == 2968
    assert c["kept"] + c["dropped"] + c["quarantined"] == c["read"]
    assert c["quarantined"] == 0
    kept = rows(tmp_path / "out" / "kept")
    langs = {r["lang"] for r in kept}
    assert {"en", "ja"} <= langs  # lang and the other fields survive as columns and meta
    assert all("\b" not in r["text"] for r in kept)  # the manuals' backspaces are gone
    assert all(json.loads(r["meta"]).get("license") for r in kept)


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
