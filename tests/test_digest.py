"""Content digests: the same content gives the same digest whatever the files' names,
split and row order; one changed character gives another. No Ray: the writer's batch
function and the readers run here directly."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lmforge.pipelines.outputs import COLUMNS, _write_fates, kept_digest
from lmforge.pipelines.records import FATES, KEPT, MESSAGES_TYPE, to_table
from lmforge.platform import digest


def rows(n: int = 40) -> list[dict]:
    out = []
    for i in range(n):
        fate = "dropped" if i % 5 == 0 else KEPT
        out.append(
            {
                "id": f"doc-{i}",
                "text": f"Document {i}: Ray Data writes blocks in any order.",
                "source": "in.jsonl",
                "lang": "en",
                "meta": '{"k": 1}',
                "fate": fate,
                "step": "length" if fate != KEPT else None,
                "reason": "too_short" if fate != KEPT else None,
            }
        )
    return out


def write(tmp: Path, name: str, batches: list[list[dict]]) -> tuple[str, Counter[str]]:
    """The writer's batch function over `batches`; the tallies summed as the driver does."""
    out = tmp / name
    for fate in FATES:
        (out / fate).mkdir(parents=True)
    counted: Counter[str] = Counter()
    for batch in batches:
        tally = _write_fates(to_table(batch), str(out), COLUMNS, jsonl=())
        for row in tally.to_pylist():
            counted[row["key"]] += row["n"]
    return str(out), counted


def test_kept_digest_ignores_split_and_order_but_not_content(tmp_path: Path) -> None:
    data = rows()
    kept = sum(r["fate"] == KEPT for r in data)
    folder, one = write(tmp_path, "one", [data])
    shuffled = data[:]
    random.Random(0).shuffle(shuffled)
    _, three = write(tmp_path, "three", [shuffled[:7], shuffled[7:30], shuffled[30:]])
    assert kept_digest(one, kept) == kept_digest(three, kept)
    # what the writer summed is what reading the kept files back gives
    assert kept_digest(one, kept) == digest.of_rows("rows", *digest.parquet_rows(f"{folder}/kept"))

    changed = [dict(r) for r in data]
    changed[1]["text"] = changed[1]["text"].replace("Ray", "Ray!")  # row 1 is kept
    _, other = write(tmp_path, "changed", [changed])
    assert kept_digest(other, kept) != kept_digest(one, kept)
    # a dropped row's text is not content of the output
    dropped = [dict(r) for r in data]
    dropped[0]["text"] = "something else"
    _, same = write(tmp_path, "dropped", [dropped])
    assert kept_digest(same, kept) == kept_digest(one, kept)
    # a row kept twice is not the same content as once
    _, twice = write(tmp_path, "twice", [data, data[1:2]])
    assert kept_digest(twice, kept + 1) != kept_digest(one, kept)


def test_pieces_carry_the_sum_exactly() -> None:
    values = [random.Random(i).getrandbits(128) for i in range(1000)]
    pieces = [0] * digest.PIECES
    for v in values:  # summed piece by piece, as the tally rows are
        for i, p in enumerate(digest.to_pieces(v)):
            pieces[i] += p
    assert all(p < 2**63 for p in pieces)
    assert digest.from_pieces(pieces) == sum(values) % 2**128


def test_token_shards_digest_ignores_files_and_order(tmp_path: Path) -> None:
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("doc_starts", pa.list_(pa.int32()))])
    seqs = [[i, i + 1, i + 2, i + 3] for i in range(0, 400, 4)]
    starts = [[0] if i % 3 else [0, 2] for i in range(len(seqs))]
    table = pa.table({"input_ids": seqs, "doc_starts": starts}, schema=schema)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pq.write_table(table, tmp_path / "a" / "part-0.parquet", row_group_size=16)
    order = list(range(len(seqs)))
    random.Random(1).shuffle(order)
    shuffled = table.take(order)
    pq.write_table(shuffled.slice(0, 33), tmp_path / "b" / "f3e1.parquet")
    pq.write_table(shuffled.slice(33), tmp_path / "b" / "07aa.parquet", row_group_size=7)
    a, b = digest.parquet_rows(str(tmp_path / "a")), digest.parquet_rows(str(tmp_path / "b"))
    assert a == b and a[0] == len(seqs)

    seqs[5] = [5, 6, 7, 9]  # one token changed
    (tmp_path / "c").mkdir()
    changed = pa.table({"input_ids": seqs, "doc_starts": starts}, schema=schema)
    pq.write_table(changed, tmp_path / "c" / "part-0.parquet")
    assert digest.parquet_rows(str(tmp_path / "c")) != a
    # the buffer fast path and the JSON path tell the same rows apart the same way
    sliced = list(digest.record_hashes(table.slice(10, 5)))
    assert sliced == list(digest.record_hashes(table))[10:15]
    messages = pa.table({"m": pa.array([[{"role": "user", "content": "hi"}]], MESSAGES_TYPE)})
    assert len(list(digest.record_hashes(messages))) == 1


def test_files_digest_reads_content_and_listing_digest_reads_metadata(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"a": 1}')
    (model / "model.safetensors").write_bytes(b"\0" * 1000)
    before = digest.of_files(str(model))
    listed = digest.of_listing(str(model))
    os.utime(model / "config.json", (1, 1))  # touched: same content, new mtime
    assert digest.of_files(str(model)) == before
    assert digest.of_listing(str(model)) != listed
    (model / "model.safetensors").write_bytes(b"\0" * 999 + b"\1")
    assert digest.of_files(str(model)) != before
    # a glob lists the files it matches, as the readers expand it
    only = digest.of_listing(str(model / "*.json"))
    assert only != digest.of_listing(str(model))
    os.utime(model / "model.safetensors", (2, 2))
    assert digest.of_listing(str(model / "*.json")) == only
    assert digest.of_input("builtin:python-docs") == digest.of_input("builtin:python-docs")
    assert digest.of_input(str(tmp_path / "absent")) is None


def test_config_digest_is_canonical() -> None:
    a = {"b": [1, 2], "a": {"y": 1.5, "x": None}}
    b = {"a": {"x": None, "y": 1.5}, "b": [1, 2]}
    assert digest.of_config(a) == digest.of_config(b)
    assert digest.of_config({**a, "b": [2, 1]}) != digest.of_config(a)
    assert len(digest.of_config(a)) == 32  # MLflow keeps dataset digests of <= 36
