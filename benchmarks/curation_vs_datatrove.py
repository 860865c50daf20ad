"""The `configs/curate-parity.yaml` recipe vs datatrove's filters on the same documents:
decisions, kept text and speed.

    .venv/bin/python benchmarks/curation_vs_datatrove.py [--docstrings 5000]
        [--datatrove-python /tmp/dt-venv/bin/python]

datatrove is not a dependency of lmforge. The script imports it when it can, else runs
this same file in another interpreter that has it (--datatrove-python, $DATATROVE_PYTHON,
or /tmp/dt-venv/bin/python, made with `python3 -m venv /tmp/dt-venv &&
/tmp/dt-venv/bin/pip install datatrove spacy regex`; datatrove's English words come from
`spacy.blank("en")`, no model download). Without datatrove it says so and exits 0.

Corpora: the English part of ../shared/data/corpus/debian_docs_en_ja_de.jsonl (Debian
manuals and fortunes) and the built-in docstring corpus, as written (the recipe does no
normalization), written as JSONL and read back by lmforge's parser (`parse_file`) into
rows of the stage's schema.

lmforge: the per-document steps the recipe builds (`curation.curate_steps` of its
`curate` section: extract, then Gopher repetition, Gopher quality, C4 without the
terminal-punctuation rule, FineWeb), run by `steps.Pipeline` on one Arrow table of the
rows, as the curate stage runs them on each batch. datatrove: the same chain of its own
filters (`filter_no_terminal_punct=False`, as FineWeb ran it) with their defaults, one
`Document` at a time. Both in one process, one core.

Printed: docs/s per core of each chain and their ratio (speed goal: ratio >= 1; missing
it is printed but does not fail the run); the share of documents on which the chain
decides alike, with the same dropping filter and reason (a kept document must also come
out with the same text, as C4 rewrites it), and on which each filter, run alone after
extract, decides alike with the same reason. Exit status 1 when the chain agrees on
fewer than 99% of the documents of a corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

CORPUS = "corpus/debian_docs_en_ja_de.jsonl"
FILTERS = ("gopher_rep", "gopher_quality", "c4_quality", "fineweb_quality")
DEFAULT_DT_PYTHON = "/tmp/dt-venv/bin/python"
RECIPE = harness.ROOT / "configs" / "curate-parity.yaml"
AGREEMENT_BAR = 0.99  # share of documents the chains must decide alike, per corpus
SPEED_GOAL = 1.0  # lmforge / datatrove docs/s per core

# Decisions of one side: per document, the chain's result ("kept" or the dropping
# filter/reason), the text it kept, and each filter's result alone.
Decisions = list[dict[str, Any]]


def run_chain(docs: list[dict[str, Any]], chain: list[Any], apply: Any) -> tuple[Decisions, float]:
    """datatrove's side: `apply(filter, doc_dict) -> "kept" | reason` over the chain and
    each filter alone; returns the decisions and the seconds the chain took (the
    standalone runs untimed)."""
    out: Decisions = []
    elapsed = 0.0
    for doc in docs:
        row = dict(doc)
        t0 = time.perf_counter()
        result = "kept"
        for name, f in zip(FILTERS, chain, strict=True):
            verdict = apply(f, row)
            if verdict != "kept":
                result = f"{name}/{verdict}"
                break
        elapsed += time.perf_counter() - t0
        alone = {name: apply(f, dict(doc)) for name, f in zip(FILTERS, chain, strict=True)}
        out.append({"chain": result, "text": row["text"], "alone": alone})
    return out, elapsed


# ------------------------------------------------------------------------ datatrove side


def datatrove_decisions(docs: list[dict[str, Any]]) -> tuple[Decisions, float]:
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    chain = [
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
    ]

    def apply(f: Any, row: dict[str, Any]) -> str:
        doc = Document(text=row["text"], id=row["id"])
        result = f.filter(doc)
        row["text"] = doc.text
        return "kept" if result is True else result[1]

    return run_chain(docs, chain, apply)


def worker(inp: str, out: str) -> None:
    """Run in datatrove's interpreter: decisions of `inp` (JSONL docs) into `out` (JSON)."""
    docs = [json.loads(line) for line in Path(inp).read_text().splitlines()]
    decisions, seconds = datatrove_decisions(docs)
    Path(out).write_text(json.dumps({"decisions": decisions, "seconds": seconds}))


def datatrove_python(arg: str | None) -> list[str] | None:
    """How to run datatrove: [] in this interpreter, [python] in another, None: nowhere."""
    try:
        import datatrove.pipeline.filters  # noqa: F401

        return []
    except ImportError:
        pass
    for python in (arg, os.environ.get("DATATROVE_PYTHON"), DEFAULT_DT_PYTHON):
        if python and Path(python).exists():
            probe = [python, "-c", "import datatrove.pipeline.filters, spacy"]
            if subprocess.run(probe, capture_output=True).returncode == 0:
                return [python]
    return None


def run_datatrove(how: list[str], docs: list[dict[str, Any]]) -> tuple[Decisions, float]:
    if not how:
        return datatrove_decisions(docs)
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "docs.jsonl", Path(tmp) / "decisions.json"
        inp.write_text("".join(json.dumps(d) + "\n" for d in docs))
        subprocess.run([*how, __file__, "--worker", str(inp), str(out)], check=True)
        got = json.loads(out.read_text())
    return got["decisions"], got["seconds"]


# ------------------------------------------------------------------------ lmforge side


def parity_steps() -> list[Any]:
    """The per-document steps of configs/curate-parity.yaml, as the curate stage builds them."""
    from lmforge.jobs.recipe import load_recipe
    from lmforge.pipelines.curation import curate_steps

    recipe = load_recipe(RECIPE, stage="curate")
    return curate_steps(recipe.curate.model_dump())


def _outcome(row: dict[str, Any]) -> str:
    """`kept`, or `<step>/<reason>` of a dropped row (the reason already names the step),
    `quarantined/<error>` of an unreadable one."""
    if row["fate"] == "kept":
        return "kept"
    if row["fate"] == "quarantined":
        return f"quarantined/{row['error']}"
    step, reason = row["step"], row["reason"] or ""
    return reason if reason.startswith(f"{step}/") else f"{step}/{reason}"


def lmforge_decisions(docs: list[dict[str, Any]]) -> tuple[Decisions, float]:
    """The recipe's steps over the documents; returns the decisions and the seconds the
    chain took (each filter alone untimed)."""
    from lmforge.pipelines.records import to_table
    from lmforge.pipelines.steps import Pipeline

    steps = parity_steps()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.jsonl"
        path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
        table = to_table(harness.read_rows_plain([path]))
    t0 = time.perf_counter()
    chain = Pipeline(steps)(table).to_pylist()
    elapsed = time.perf_counter() - t0
    extract, filters = steps[0], steps[1:]  # every step after extract, run alone
    alone = {f.name: Pipeline([extract, f])(table).to_pylist() for f in filters}
    out: Decisions = []
    for i, row in enumerate(chain):
        if row["id"] != docs[i]["id"]:
            raise RuntimeError(f"rows out of order: {row['id']} where {docs[i]['id']} was")
        out.append(
            {
                "chain": _outcome(row),
                "text": row["text"],
                "alone": {
                    name: _outcome(rows[i]).removeprefix(f"{name}/") for name, rows in alone.items()
                },
            }
        )
    return out, elapsed


def corpora(n_docstrings: int) -> dict[str, list[dict[str, Any]]]:
    """Documents as written: {id, text, lang} ("en" for the Debian texts, none otherwise)."""
    out: dict[str, list[dict[str, Any]]] = {}
    path = harness.shared_data(CORPUS)
    if path is None:
        print(f"{CORPUS} not found under ../shared/data: the Debian corpus is skipped")
    else:
        records = [json.loads(line) for line in path.read_text().splitlines()]
        out["debian-en"] = [
            {"id": f"{i}:{r['id']}", "text": r["text"], "lang": "en"}
            for i, r in enumerate(records)
            if r["lang"] == "en"
        ]
    out["docstrings"] = [
        {"id": r["id"], "text": r["text"], "lang": None} for r in harness.docstrings(n_docstrings)
    ]
    return out


def compare(name: str, docs: list[dict[str, Any]], ours: Decisions, theirs: Decisions) -> float:
    """Print the agreement figures of one corpus; returns the chain's agreement."""
    n = len(docs)
    chain = sum(
        a["chain"] == b["chain"] and (a["chain"] != "kept" or a["text"] == b["text"])
        for a, b in zip(ours, theirs, strict=True)
    )
    rows = [("chain (decision and kept text)", f"{chain}/{n}", harness.fmt(100 * chain / n, 2))]
    for f in FILTERS:
        same = sum(
            a["alone"].get(f, "absent from the recipe") == b["alone"][f]
            for a, b in zip(ours, theirs, strict=True)
        )
        rows.append(
            (f"{f} alone (decision and reason)", f"{same}/{n}", harness.fmt(100 * same / n, 2))
        )
    kept = sum(d["chain"] == "kept" for d in ours), sum(d["chain"] == "kept" for d in theirs)
    print(f"\n{name}: {n} documents, kept by lmforge {kept[0]}, by datatrove {kept[1]}")
    harness.table(rows, ("agreement", "documents", "%"))
    differ = [
        (doc, a, b)
        for doc, a, b in zip(docs, ours, theirs, strict=True)
        if a["chain"] != b["chain"] or (a["chain"] == "kept" and a["text"] != b["text"])
    ]
    for doc, a, b in differ[:5]:
        if a["chain"] != b["chain"]:
            print(f"  differs: {doc['id']}: lmforge {a['chain']} / datatrove {b['chain']}")
        else:
            where = harness.first_difference(a["text"], b["text"], names=("lmforge", "datatrove"))
            print(f"  differs: {doc['id']}: kept by both, kept text {where}")
    return chain / n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docstrings", type=int, default=5000, help="docstring documents")
    p.add_argument("--datatrove-python", help="an interpreter with datatrove and spacy")
    p.add_argument("--worker", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    how = datatrove_python(args.datatrove_python)
    if how is None:
        print(
            "datatrove is not available: nothing to compare. Install it apart from lmforge: "
            "python3 -m venv /tmp/dt-venv && /tmp/dt-venv/bin/pip install datatrove spacy "
            "regex, then rerun (or pass --datatrove-python)."
        )
        return 0
    where = "this interpreter" if not how else how[0]
    print(f"datatrove runs in {where}; one process each, one core")
    steps = ", ".join(s.name for s in parity_steps())
    print(f"lmforge runs the steps of {RECIPE.relative_to(harness.ROOT)}: {steps}")
    total = {"lmforge": [0, 0.0], "datatrove": [0, 0.0]}
    worst = 1.0
    for name, docs in corpora(args.docstrings).items():
        ours, t_ours = lmforge_decisions(docs)
        theirs, t_theirs = run_datatrove(how, docs)
        worst = min(worst, compare(name, docs, ours, theirs))
        rate = len(docs) / t_ours, len(docs) / t_theirs
        print(f"docs/s per core: lmforge {harness.fmt(rate[0])}, datatrove {harness.fmt(rate[1])}")
        for side, seconds in (("lmforge", t_ours), ("datatrove", t_theirs)):
            total[side][0] += len(docs)
            total[side][1] += seconds
    ours_rate, theirs_rate = (n / s for n, s in (total["lmforge"], total["datatrove"]))
    ok = worst >= AGREEMENT_BAR
    print(
        f"\nchain agreement, worst corpus: {100 * worst:.2f}% (the bar is "
        f"{100 * AGREEMENT_BAR:.0f}%): {'met' if ok else 'MISSED'}"
    )
    return harness.result(
        "quality_filters_docs_per_s_per_core", ours_rate, theirs_rate, "docs/s",
        agree=ok, goal=SPEED_GOAL,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
