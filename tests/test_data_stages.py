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
from lmforge.jobs.recipe import load_recipe
from lmforge.pipelines.outputs import parquet_dataset

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
    """Every format, every kind of drop, the outputs, the MLflow metrics and report."""
    real = shared("synthetic/gpteacher_roleplay_gpt4.json")
    gsm8k = shared("evals/gsm8k_test.jsonl")
    leaked = json.loads(gsm8k.read_text().splitlines()[5])["question"]
    story = (
        "The keeper climbed the stairs at dusk. He trimmed the wick and wiped the glass. "
        "Far out, a fishing boat turned toward the light."
    )
    prompt = "Describe an evening in the life of a lighthouse keeper on a remote island."

    def alpaca(rid: str, instruction: str, output: str) -> str:
        return json.dumps({"id": rid, "instruction": instruction, "input": "", "output": output})

    def chat(rid: str, user: str, answer: str) -> str:
        return json.dumps({"id": rid, "messages": [
            {"role": "user", "content": user}, {"role": "assistant", "content": answer}
        ]}, ensure_ascii=False)  # fmt: skip

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
                alpaca("s-3", "Who are you?", "I am ChatGPT, a language model trained by OpenAI."),
                chat("s-4", "Write a poem", "As an AI language model, I cannot write poems."),
                "[broken",
                alpaca("s-5", prompt, story),
                alpaca("s-6", prompt, story + " The gulls cried."),  # same prompt: a duplicate
                alpaca("s-7", prompt.replace(".", ", please."), story),  # near duplicate
                alpaca("s-8", leaked, "Let me work it out step by step."),  # GSM8K question
                alpaca(
                    "s-9", "Tell me a story.", story + " Then the keeper opened the logbook and"
                ),
                chat("s-10", "灯台守の一日について説明してください。", story),
                alpaca("s-11", "Tell me a long story.", story + " The wind howled." * 8),
            ]
        )
        + "\n"
    )
    questions = tmp_path / "question.jsonl"
    questions.write_text(json.dumps({"question_id": 81, "category": "writing", "turns": [
        "Write a short travel note about Hawaii.", "Now make it rhyme."]}) + "\n")  # fmt: skip
    mtbench = tmp_path / "gpt-4.jsonl"
    mtbench.write_text(json.dumps({"question_id": 81, "answer_id": "a1", "model_id": "gpt-4",
        "choices": [{"index": 0, "turns": ["Aloha! Hawaii greeted us with warm rain.",
                                           "In Hawaii the rain came down, and we danced around."]}],
        "tstamp": 1.0}) + "\n")  # fmt: skip
    inputs = ["builtin:synthetic-examples", str(real), str(bad), str(mtbench)]
    r = recipe_for(
        tmp_path, "filter-synthetic", inputs,
        f"synthetic.mtbench_questions={json.dumps([str(questions)])}",
        f"synthetic.decontam.eval_sets={json.dumps([str(gsm8k)])}",
    )  # fmt: skip
    result = filter_synthetic.run(r)
    out = tmp_path / "out"
    m = json.loads((out / "manifest.json").read_text())
    c = m["counts"]
    assert c["read"] == 49 + 1923 + 12 + 1
    assert c["read"] == c["kept"] + c["dropped"] + c["quarantined"]
    dropped = {r["id"]: r for r in jsonl_rows(out / "dropped")}
    reasons = {i: f"{r['step']}/{r['reason']}" for i, r in dropped.items()}
    assert reasons["s-3"] == "synthetic_filter/identity"
    assert reasons["s-4"] == "synthetic_filter/refusal/disclaimer"
    assert reasons["s-6"] == "prompt_dedup/duplicate_prompt"
    assert reasons["s-7"] == "prompt_dedup/near_duplicate_prompt"
    assert reasons["s-8"] == "decontam/decontam/gsm8k_test"
    assert reasons["s-9"] == "synthetic_filter/truncated/mid_sentence"
    assert reasons["s-10"] == "synthetic_filter/language_mismatch"
    assert reasons["s-11"] == "synthetic_filter/repetition/tail"
    # each drop says why, in words a person can check
    assert "opened the logbook and" in json.loads(dropped["s-9"]["meta"])["evidence"]
    assert json.loads(dropped["s-6"]["meta"])["duplicate_of"] == "s-5"
    assert json.loads(dropped["s-8"]["meta"])["decontam"]["eval_set"] == "gsm8k_test"
    errors = {r["id"]: r["error"] for r in jsonl_rows(out / "quarantined")}
    assert set(errors) == {"s-2", "bad.jsonl:5"}
    # real GPT-4 role-play data is almost all kept (its identity words are role-play)
    real_dropped = [i for i in reasons if i.startswith("gpteacher")]
    assert len(real_dropped) < 0.03 * 1923
    # kept: Parquet and JSONL, chat turns ready for the tokenizer's chat template
    kept = {r["id"]: r for r in rows(out / "kept")}
    assert {r["id"] for r in jsonl_rows(out / "kept")} == set(kept)
    s1 = kept["s-1"]
    assert [t["role"] for t in s1["messages"]] == ["user", "assistant"]
    assert s1["text"] == "<|user|>\nHi\n<|assistant|>\nHello!\n"
    mt = kept["gpt-4.jsonl:1"]
    assert [t["role"] for t in mt["messages"]] == ["user", "assistant"] * 2
    assert json.loads(mt["meta"])["record"]["model_id"] == "gpt-4"
    # MLflow: a metric per reason, and the report with examples of each
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    metrics = client.get_run(result.run_id).data.metrics
    assert metrics["dropped.synthetic_filter.truncated.mid_sentence"] >= 1
    assert metrics["dropped.prompt_dedup.near_duplicate_prompt"] >= 1
    report = client.download_artifacts(result.run_id, "report.html", str(tmp_path))
    html = Path(report).read_text(encoding="utf-8")
    assert "prompt_dedup/near_duplicate_prompt" in html and "s-9" in html
