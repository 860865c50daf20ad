"""Evaluation sets read from their files: GSM8K, HumanEval, MMLU, or a JSONL field, as
items whose text is what a leak would contain."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from lmforge.platform import storage

_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator notes: 16-3-4=<<16-3-4=9>>9


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
