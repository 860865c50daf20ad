"""Every record has a fate, counted where it enters: the readers count each input file's
records before any step runs, and a stage whose written rows do not add up to them fails.

The inputs are files whose record counts are known from how they were written here
(malformed lines, blank lines, multi-record files, an unreadable file), not from what
lmforge makes of them.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.pipelines.outputs import AccountingError, write_stage_output
from lmforge.pipelines.readers import ReadTally, read_rows

LIMIT = 1_000_000


def write_inputs(folder: Path) -> dict[str, int]:
    """Files of several formats; returns file -> the records each holds."""
    folder.mkdir()
    known: dict[str, int] = {}
    lines = [json.dumps({"id": f"j{i}", "text": f"record {i}"}) for i in range(5)]
    lines[1] = '{"id": "broken", "text": '  # not JSON: quarantined, still a record
    lines.insert(3, "")  # a blank line is layout, not a record
    lines.append('{"id": "bad-utf8", "text": "caf\xe9"}')
    data = "\n".join(lines).encode("utf-8").replace(b"caf\xc3\xa9", b"caf\xe9")
    (folder / "a.jsonl").write_bytes(data)
    known["a.jsonl"] = 6  # 5 records + 1 invalid UTF-8 line; the blank line is none
    records = [{"id": f"l{i}", "text": f"list record {i}"} for i in range(3)]
    (folder / "b.json").write_text(json.dumps(records))
    known["b.json"] = 3
    (folder / "c.csv").write_text("id,text\nc1,one\nc2,two,extra\n\nc3,three\n")
    known["c.csv"] = 3  # the row with a field too many is a quarantined record
    (folder / "d.txt").write_text("One plain text document.\n")
    known["d.txt"] = 1
    table = pa.table({"id": [f"p{i}" for i in range(7)], "text": ["parquet row"] * 7})
    pq.write_table(table, folder / "e.parquet", row_group_size=3)  # 3 row groups
    known["e.parquet"] = 7
    (folder / "f.jsonl.gz").write_bytes(b"not gzip at all")  # one quarantined row
    known["f.jsonl.gz"] = 1
    gz = gzip.compress(b'{"id": "g1", "text": "x"}\n{"id": "g2", "text": "y"}\n')
    (folder / "g.jsonl.gz").write_bytes(gz)
    known["g.jsonl.gz"] = 2
    return {str(folder / name): n for name, n in known.items()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    return write_inputs(tmp_path_factory.mktemp("acct") / "in")


@pytest.mark.usefixtures("ray_local")
def test_readers_count_each_files_records_as_they_enter(inputs: dict[str, int]) -> None:
    tally = ReadTally()
    rows = read_rows(sorted(inputs), id_field="id", max_record_bytes=LIMIT, tally=tally)
    got = rows.take_all()
    assert tally.counts() == inputs
    assert len(got) == sum(inputs.values())
    by_file: dict[str, int] = {}
    for r in got:
        by_file[r["file"]] = by_file.get(r["file"], 0) + 1
    assert by_file == inputs  # each row names the file it came from


@pytest.mark.usefixtures("ray_local")
def test_a_step_that_loses_a_row_fails_the_stage(inputs: dict[str, int], tmp_path: Path) -> None:
    tally = ReadTally()
    rows = read_rows(sorted(inputs), id_field="id", max_record_bytes=LIMIT, tally=tally)
    rows = rows.materialize()
    # a "step" that silently drops the row it does not like, instead of marking it dropped
    lossy = rows.filter(lambda r: r["id"] != "j2")
    with pytest.raises(AccountingError, match=r"read 23 records from 7 files.*1 lost"):
        write_stage_output(
            lossy,
            str(tmp_path / "lossy"),
            stage="test",
            inputs=sorted(inputs),
            run_id=None,
            read_by_file=tally.counts(),
        )
    # the same rows, none lost: the manifest's `read` is the readers' count, per file
    manifest = write_stage_output(
        rows,
        str(tmp_path / "whole"),
        stage="test",
        inputs=sorted(inputs),
        run_id=None,
        read_by_file=tally.counts(),
    )
    assert manifest["counts"]["read"] == sum(inputs.values()) == 23
    assert manifest["read_by_file"] == inputs
    counts = manifest["counts"]
    assert counts["kept"] + counts["dropped"] + counts["quarantined"] == 23
    assert counts["quarantined"] == 4  # broken JSON, bad UTF-8, the extra CSV field, not gzip


@pytest.mark.usefixtures("ray_local")
def test_a_step_that_invents_a_row_fails_the_stage(inputs: dict[str, int], tmp_path: Path) -> None:
    tally = ReadTally()
    rows = read_rows(sorted(inputs), id_field="id", max_record_bytes=LIMIT, tally=tally)
    doubled = rows.union(rows.limit(1)).materialize()
    with pytest.raises(AccountingError, match="1 invented"):
        write_stage_output(
            doubled,
            str(tmp_path / "out"),
            stage="test",
            inputs=sorted(inputs),
            run_id=None,
            read_by_file=tally.counts(),
        )


@pytest.mark.usefixtures("ray_local")
def test_filter_synthetic_manifest_reads_what_the_files_hold(tmp_path: Path) -> None:
    """The real stage: its manifest's `read` is the records in the files, malformed ones
    and a multi-record JSON list included."""
    from lmforge.jobs import filter_synthetic
    from lmforge.jobs.recipe import load_recipe

    data = tmp_path / "chats"
    data.mkdir()
    chat = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    }
    lines = [json.dumps({"id": f"m{i}", **chat}) for i in range(4)]
    lines += ["{not json", json.dumps({"id": "odd", "shape": "unknown"})]
    (data / "a.jsonl").write_text("\n".join(lines) + "\n\n")
    alpaca = [{"instruction": f"Say {w}.", "output": f"{w}."} for w in ("yes", "no", "maybe")]
    (data / "b.json").write_text(json.dumps(alpaca))
    recipe = load_recipe(
        None,
        stage="filter-synthetic",
        input=[str(data)],
        output=str(tmp_path / "out"),
        overrides=[f"workdir={tmp_path}", "synthetic.report=false"],
    )
    result = filter_synthetic.run(recipe)
    manifest = result.info["manifest"]
    assert manifest["read_by_file"] == {str(data / "a.jsonl"): 6, str(data / "b.json"): 3}
    counts = manifest["counts"]
    assert counts["read"] == 9
    assert counts["quarantined"] == 2  # the broken line and the record of unknown shape
    assert counts["kept"] + counts["dropped"] + counts["quarantined"] == 9
